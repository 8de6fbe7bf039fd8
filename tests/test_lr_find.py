"""`src.lr_find`: Lightning's learning-rate range test, its plot, its JSON and the command."""

import json

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from src.errors import UserError
from src.lr_find import find_lr
from tests.helpers.cli import run_module
from tests.helpers.config import CONF_DIR, FAST

# 20 steps without early stopping: enough losses for a suggestion (it skips the first 10).
RANGE = ["lr_find.num_training=20", "lr_find.max_lr=0.1", "lr_find.early_stop_threshold=null"]


def test_lr_find_writes_the_plot_and_suggestion_and_prints_the_train_command(
    image_folder, tmp_path
):
    out = tmp_path / "lr_find"
    args = [f"data.data_dir={image_folder}", "strategy=lp_ft", "strategy.probe_epochs=1"]
    result = run_module("src.lr_find", *FAST, *args, *RANGE, f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads((out / "lr_find.json").read_text())
    assert len(found["lr"]) == len(found["loss"]) == 20
    assert found["suggested_lr"] in found["lr"]
    assert 1e-6 <= found["suggested_lr"] <= 0.1
    with Image.open(out / "lr_find.png") as plot:
        assert plot.width > 300 and plot.height > 200
    command = result.stdout.strip().splitlines()[-1].strip()
    assert command.startswith("python -m src.train model.weights=null")
    assert " strategy=lp_ft strategy.probe_epochs=1 " in command and "lr_find." not in command
    assert command.endswith(f"optimizer.lr={found['suggested_lr']:.3g}")


def test_an_empty_learning_rate_range_is_refused(image_folder, tmp_path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="lr_find",
            overrides=[*FAST, f"data.data_dir={image_folder}", f"paths.output_dir={tmp_path}",
                       "lr_find.min_lr=0.1", "lr_find.max_lr=0.01"],
        )  # fmt: skip
    with pytest.raises(UserError, match=r"lr_find.min_lr=0.1 and lr_find.max_lr=0.01"):
        find_lr(cfg)
