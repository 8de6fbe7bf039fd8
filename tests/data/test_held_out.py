"""The held-out test split after training, the run's splits.csv reused by eval and resume,
and k-fold cross-validation as a multirun."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from src.data.splits import SplitSettings, build_splits
from src.eval import evaluate
from src.train import train
from tests.helpers.cli import run_cli
from tests.helpers.config import FAST, compose_train_config
from tests.helpers.images import make_class_folders


def splits_csv(run_dir: Path) -> dict[str, set[str]]:
    """{split: paths} of a run's splits.csv."""
    out: dict[str, set[str]] = {}
    with open(run_dir / "splits.csv", newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["split"], set()).add(row["path"])
    return out


def add_images(data: Path, per_class: int) -> None:
    """New files in every class folder: a split made again now would differ."""
    for folder in [p for p in data.iterdir() if p.is_dir()]:
        first = next(folder.glob("*.jpg"))
        for i in range(per_class):
            shutil.copy(first, folder / f"added_{i}.jpg")


@pytest.fixture
def one_folder_run(tmp_path):
    """Train 1 epoch (fp32) on one folder of class folders, split 12/4/4 into train/val/test."""

    def run(*overrides: str):
        data = make_class_folders(tmp_path / "data", {"ants": 10, "bees": 10})
        run_dir = tmp_path / "run"
        run_dir.mkdir(exist_ok=True)
        base = [*FAST, f"data.data_dir={data}", f"paths.output_dir={run_dir}"]
        cfg = compose_train_config([*base, "data.test_fraction=0.2", "trainer.max_epochs=1",
                                    "trainer.precision=32-true", *overrides])  # fmt: skip
        return train(cfg), data, run_dir

    return run


def test_best_checkpoint_is_tested_and_eval_reuses_the_runs_split(one_folder_run):
    summary, data, run_dir = one_folder_run()
    assert (summary.train_size, summary.val_size, summary.test_size) == (12, 4, 4)
    assert 0.0 <= summary.test_acc <= 1.0 and summary.test_loss > 0
    saved = json.loads((run_dir / "summary.json").read_text())
    assert (saved["test_acc"], saved["test_loss"]) == (summary.test_acc, summary.test_loss)
    assert f"test/acc {summary.test_acc:.4f}" in summary.result_line(run_dir)
    split = splits_csv(run_dir)
    assert [len(split[name]) for name in ("train", "val", "test")] == [12, 4, 4]

    add_images(data, per_class=5)
    grown = build_splits(data, SplitSettings(test_fraction=0.2))
    assert len(grown.rows) == 30  # a split made again would take the new images
    results = evaluate(run_dir=str(run_dir), split="test")
    assert results["num_images"] == 4  # the run's own test images, from splits.csv
    assert results["acc"] == pytest.approx(summary.test_acc)
    assert results["loss"] == pytest.approx(summary.test_loss, abs=1e-5)


def test_resuming_keeps_the_split_the_run_started_with(one_folder_run):
    _, data, run_dir = one_folder_run()
    started_with = (run_dir / "splits.csv").read_text()
    add_images(data, per_class=5)
    resumed, _, _ = one_folder_run("ckpt_path=last", "trainer.max_epochs=2")
    assert resumed.epochs_trained == 2 and resumed.resumed_from
    assert (run_dir / "splits.csv").read_text() == started_with
    assert (resumed.train_size, resumed.val_size, resumed.test_size) == (12, 4, 4)


def test_cli_reports_a_bad_labels_csv_with_exit_2(image_folder, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class\ntrain/ants/ants_0.jpg,ants\n")
    result = run_cli(*FAST, f"data.data_dir={image_folder}", f"data.labels_csv={labels}",
                     f"hydra.run.dir={tmp_path}/run")  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "has columns ['file', 'class']; it needs a header row" in output
    assert "Traceback" not in output


@pytest.mark.slow
def test_multirun_over_folds_validates_on_every_image_once(tmp_path):
    data = make_class_folders(tmp_path / "data", {"ants": 9, "bees": 9})
    logs = tmp_path / "logs"
    result = run_cli("-m", *FAST, "strategy=frozen", "trainer.max_epochs=1",
                     f"data.data_dir={data}", f"paths.log_dir={logs}", "data.num_folds=3",
                     "data.fold=0,1,2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (logs / "multiruns").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if (p / "summary.json").is_file())
    assert [job.name for job in jobs] == ["0", "1", "2"]
    vals = [splits_csv(job)["val"] for job in jobs]
    every_image = {f"{c}/{c}_{i}.jpg" for c in ("ants", "bees") for i in range(9)}
    assert set.union(*vals) == every_image and sum(map(len, vals)) == 18
    for job, val in zip(jobs, vals, strict=True):
        summary = json.loads((job / "summary.json").read_text())
        assert (summary["train_size"], summary["val_size"]) == (12, 6)
        assert splits_csv(job)["train"] == every_image - val
