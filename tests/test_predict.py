"""`src.predict`: top-k labels for new images, without the training data."""

import csv
import os
import shutil
import subprocess
import sys

import pytest

from src.errors import UserError
from src.predict import predict, write_csv
from tests.helpers.config import ROOT


@pytest.fixture
def new_images(trained_run, tmp_path):
    """Two images of the run's validation set and two files that are not readable images."""
    folder = tmp_path / "new"
    folder.mkdir()
    val = trained_run.parent / "data" / "val"
    shutil.copy(val / "ants" / "ants_0.jpg", folder / "a.jpg")
    shutil.copy(val / "bees" / "bees_0.jpg", folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "cut.jpg").write_bytes((val / "bees" / "bees_1.jpg").read_bytes()[:300])
    return folder


@pytest.fixture
def lone_checkpoint(trained_run, tmp_path):
    """The best checkpoint alone in a folder: no run config, no data folder beside it."""
    ckpt = next((trained_run / "checkpoints").glob("best-*.ckpt"))
    (tmp_path / "lone").mkdir()
    return str(shutil.copy(ckpt, tmp_path / "lone" / "model.ckpt"))


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("top_k", [1, 2, 5])
def test_top_k_labels_are_sorted_probabilities_summing_to_at_most_one(
    lone_checkpoint, new_images, tmp_path, top_k
):
    rows = predict(lone_checkpoint, [str(new_images / "a.jpg"), str(new_images / "b.jpg")], top_k)
    write_csv(rows, tmp_path / "out.csv")
    written = read_rows(tmp_path / "out.csv")
    k = min(top_k, 2)  # two classes
    assert [r["path"] for r in written] == [str(new_images / "a.jpg"), str(new_images / "b.jpg")]
    assert list(written[0]) == ["path"] + [f"{c}_{i}" for i in range(1, k + 1)
                                          for c in ("label", "prob")] + ["error"]  # fmt: skip
    for row in written:
        probs = [float(row[f"prob_{i}"]) for i in range(1, k + 1)]
        labels = [row[f"label_{i}"] for i in range(1, k + 1)]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1 + 1e-5 and all(0 <= p <= 1 for p in probs)
        assert len(set(labels)) == k and set(labels) <= {"ants", "bees"}
        assert row["error"] == ""
    if k == 2:
        assert sum(float(written[0][f"prob_{i}"]) for i in (1, 2)) == pytest.approx(1, abs=1e-5)


def test_unreadable_files_are_reported_and_the_others_labelled(lone_checkpoint, new_images):
    rows = {r["path"]: r for r in predict(lone_checkpoint, [str(new_images)], top_k=1)}
    assert set(rows) == {str(new_images / n) for n in ("a.jpg", "b.jpg", "cut.jpg", "notes.txt")}
    for bad in ("cut.jpg", "notes.txt"):
        assert rows[str(new_images / bad)]["error"].startswith("not a readable image")
        assert rows[str(new_images / bad)]["labels"] == []
    for good in ("a.jpg", "b.jpg"):
        assert rows[str(new_images / good)]["error"] is None
        assert len(rows[str(new_images / good)]["labels"]) == 1


def test_globs_select_files_and_an_empty_match_is_a_clear_error(lone_checkpoint, new_images):
    rows = predict(lone_checkpoint, [str(new_images / "*.jpg")], top_k=1, batch_size=1)
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["a.jpg", "b.jpg", "cut.jpg"]
    with pytest.raises(UserError, match=r"inputs=.*\*\.png.*matches no files"):
        predict(lone_checkpoint, [str(new_images / "*.png")])


def test_a_missing_checkpoint_or_input_is_named(new_images, tmp_path):
    with pytest.raises(UserError, match=r"Checkpoint not found: .*nothing\.ckpt"):
        predict(str(tmp_path / "nothing.ckpt"), [str(new_images)])
    with pytest.raises(UserError, match=r"ckpt_path=.*inputs="):
        predict(str(tmp_path / "nothing.ckpt"), [])


@pytest.mark.slow
def test_cli_prints_and_writes_the_csv(lone_checkpoint, new_images, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "src.predict", f"ckpt_path={lone_checkpoint}",
         f"inputs={new_images}", "top_k=2", "output=preds.csv"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_rows(tmp_path / "preds.csv")
    assert len(rows) == 4 and sum(1 for r in rows if r["error"]) == 2
    assert "2 images labelled, 2 not readable" in result.stdout
    assert f"{new_images / 'notes.txt'}: not a readable image" in result.stdout
