"""`src.eval`: a checkpoint's accuracy, per-class accuracy and confusion matrix."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from src.errors import UserError
from src.eval import evaluate
from tests.helpers.config import ROOT


def test_eval_of_a_run_reproduces_its_best_checkpoint_numbers(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    results = evaluate(run_dir=trained_run)
    assert results["ckpt_path"] == summary["best_ckpt"]
    assert results["acc"] == pytest.approx(summary["best_ckpt_val_acc"])
    for name in ("f1_macro", "balanced_acc"):  # the same definitions as training logs
        assert results[name] == pytest.approx(summary["best_ckpt_val_metrics"][f"val/{name}"])
    assert results["loss"] == pytest.approx(summary["best_ckpt_val_loss"], abs=1e-5)
    assert results["num_images"] == 8
    cm = results["confusion_matrix"]
    # 4 validation images per class: rows are true classes.
    assert [sum(row) for row in cm] == [4, 4]
    assert results["per_class_count"] == {"ants": 4, "bees": 4}
    assert results["per_class_acc"] == {"ants": cm[0][0] / 4, "bees": cm[1][1] / 4}
    assert results["acc"] == pytest.approx((cm[0][0] + cm[1][1]) / 8)


def test_eval_of_a_checkpoint_finds_its_run_and_its_data(trained_run):
    last = evaluate(ckpt_path=str(trained_run / "checkpoints" / "last.ckpt"))
    assert last["run_dir"] == str(trained_run)
    assert (last["image_size"], last["resize_size"]) == (32, 36)
    assert sum(map(sum, last["confusion_matrix"])) == 8


def test_data_dir_override_evaluates_data_that_moved(trained_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(trained_run.parent / "data" / "val", moved / "val")
    shutil.rmtree(moved / "val" / "bees")
    shutil.copytree(moved / "val" / "ants", moved / "val" / "bees")  # 8 ants, half mislabelled
    results = evaluate(run_dir=trained_run, data_dir=str(moved))
    assert results["data_dir"] == str(moved)
    assert results["confusion_matrix"][0] == results["confusion_matrix"][1]


def test_missing_data_names_the_key_to_fix(trained_run, tmp_path):
    with pytest.raises(UserError, match=r"Data folder not found: .*absent.*data\.data_dir"):
        evaluate(run_dir=trained_run, data_dir=str(tmp_path / "absent"))


def test_data_with_other_classes_is_refused(trained_run, tmp_path):
    for name in ("cats", "dogs"):
        shutil.copytree(trained_run.parent / "data" / "val" / "ants", tmp_path / "val" / name)
    with pytest.raises(UserError, match=r"\['cats', 'dogs'\].*\['ants', 'bees'\]"):
        evaluate(run_dir=trained_run, data_dir=str(tmp_path))


def test_eval_needs_a_checkpoint_or_a_run(tmp_path):
    with pytest.raises(UserError, match=r"ckpt_path=.*run_dir="):
        evaluate()
    with pytest.raises(UserError, match="not a run directory"):
        evaluate(run_dir=str(tmp_path))


@pytest.mark.slow
def test_cli_writes_eval_json_and_prints_the_table(trained_run, tmp_path):
    output = tmp_path / "eval.json"
    result = subprocess.run(
        [sys.executable, "-m", "src.eval", f"run_dir={trained_run}", f"output={output}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    assert f"val/acc {results['acc']:.4f}" in result.stdout
    assert "confusion matrix" in result.stdout and "true \\ predicted" in result.stdout
    assert not (tmp_path / ".hydra").exists()  # evaluation makes no run directory
