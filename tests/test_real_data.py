"""End to end on the real ants-vs-bees data (set $HYMENOPTERA_DATA; `.ci/run` does)."""

import json

import pytest

from tests.helpers.cli import epoch_rows, run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("strategy", ["frozen", "finetune"])
def test_two_epochs_on_hymenoptera(real_data, tmp_path, strategy):
    run_dir = tmp_path / strategy
    result = run_cli(
        f"strategy={strategy}",
        "trainer.devices=1",
        f"data.data_dir={real_data}",
        "model.weights=null",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["class_names"] == ["ants", "bees"]
    assert (summary["train_size"], summary["val_size"]) == (244, 153)
    val_acc = epoch_rows(run_dir, "val/acc")
    assert sorted(val_acc) == [0, 1]
    assert summary["best_val_acc"] == pytest.approx(max(val_acc.values()))
    assert summary["best_ckpt_val_acc"] == pytest.approx(summary["best_val_acc"])
    # Accuracy over all 153 images is a multiple of 1/153.
    assert round(summary["best_val_acc"] * 153, 3) == round(summary["best_val_acc"] * 153)
