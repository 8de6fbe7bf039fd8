"""Training end to end on generated data: schedule, best checkpoint, summary and the CLI."""

import csv
import json
from pathlib import Path

import pytest
import torch

from src.runs.summary import RunSummary
from src.train import train
from tests.helpers.cli import epoch_rows, run_cli
from tests.helpers.config import CONF_DIR, FAST


def test_learning_rate_decays_every_step_size_epochs(fast_config):
    cfg = fast_config(
        "trainer.max_epochs=5",
        "optimizer.lr=0.1",
        "scheduler.step_size=2",
        "scheduler.gamma=0.5",
    )
    train(cfg)
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as f:
        lrs = [float(r["lr-SGD"]) for r in csv.DictReader(f) if r["lr-SGD"]]
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_best_checkpoint_is_the_best_epoch_and_is_revalidated(fast_config):
    cfg = fast_config("trainer.max_epochs=4", "optimizer.lr=0.05")
    summary = train(cfg)
    val_acc = epoch_rows(Path(cfg.paths.output_dir), "val/acc")
    best_epoch = max(val_acc, key=lambda e: (val_acc[e], -e))  # first epoch reaching the max
    assert summary.best_epoch == best_epoch
    assert summary.best_val_acc == pytest.approx(val_acc[best_epoch])
    assert summary.best_ckpt_val_acc == pytest.approx(summary.best_val_acc)
    saved = torch.load(summary.best_ckpt, map_location="cpu", weights_only=True)
    assert saved["epoch"] == best_epoch
    assert saved["hyper_parameters"]["class_names"] == ["ants", "bees"]
    assert Path(summary.last_ckpt).name == "last.ckpt"


def test_summary_describes_the_run(fast_config):
    cfg = fast_config("strategy=frozen", "trainer.max_epochs=2")
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["strategy"] == "frozen"
    assert (summary["num_classes"], summary["class_names"]) == (2, ["ants", "bees"])
    assert (summary["train_size"], summary["val_size"]) == (12, 8)
    # No test/ folder: no test numbers (and none in the Result: line).
    assert (summary["test_size"], summary["test_acc"], summary["test_loss"]) == (None,) * 3
    assert "test/acc" not in RunSummary(**summary).result_line(run_dir)
    assert summary["epochs_trained"] == 2
    assert 0.0 <= summary["best_val_acc"] <= 1.0
    assert summary["wall_time_s"] >= summary["fit_time_s"] > 0
    assert "freeze_backbone: true" in (run_dir / "config.yaml").read_text()


def test_cli_trains_and_writes_the_summary(image_folder, tmp_path):
    run_dir = tmp_path / "cli_run"
    result = run_cli(
        *FAST,
        "strategy=frozen",
        "trainer.devices=1",
        f"data.data_dir={image_folder}",
        "trainer.max_epochs=2",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["strategy"] == "frozen" and summary["epochs_trained"] == 2
    assert "Result: frozen best val/acc" in result.stdout + result.stderr
    assert (run_dir / ".hydra" / "overrides.yaml").exists()


def test_cli_reports_a_missing_data_folder_without_a_traceback(tmp_path):
    result = run_cli(*FAST, f"data.data_dir={tmp_path}/absent", "data.download=false",
                     f"hydra.run.dir={tmp_path}/run")  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert f"Data folder not found: {tmp_path}/absent" in output
    assert "Traceback" not in output


def test_cli_rejects_an_unknown_strategy(tmp_path):
    result = run_cli("strategy=unfrozen", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode != 0
    assert "Could not find 'strategy/unfrozen'" in result.stderr
    assert "finetune" in result.stderr and "frozen" in result.stderr


def test_cached_features_train_the_frozen_head(fast_config):
    cfg = fast_config("strategy=frozen", "data.cache_features=true", "trainer.max_epochs=3")
    summary = train(cfg)
    assert summary.epochs_trained == 3
    assert summary.best_ckpt_val_acc == pytest.approx(summary.best_val_acc)
    # The checkpoint is a normal image model: features were a training shortcut only.
    saved = torch.load(summary.best_ckpt, map_location="cpu", weights_only=True)
    assert any(k.startswith("backbone.") for k in saved["state_dict"])


def test_cached_features_match_the_frozen_backbone_on_images(fast_config):
    """Training on cached features is the same computation as on the images themselves."""
    from hydra.utils import instantiate

    cfg = fast_config("strategy=frozen", "data.cache_features=true")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model = instantiate(cfg.model, num_classes=2, class_names=["ants", "bees"]).eval()
    from src.training.feature_cache import extract_features

    features = extract_features(
        model.features, datamodule.val_set, torch.device("cpu"), torch.no_grad
    )
    images = torch.stack([datamodule.val_set[i][0] for i in range(len(datamodule.val_set))])
    assert torch.allclose(model(features.tensors[0]), model(images), atol=1e-5)


def test_a_frozen_backbone_sees_each_validation_image_once_with_the_same_metrics(
    image_folder, tmp_path, monkeypatch
):
    """Frozen runs reuse the validation features of the first pass in every later epoch;
    the per-epoch metrics are those of running the backbone on the images each epoch."""
    from src.models.transfer import TransferLearningModel
    from src.training import feature_cache
    from tests.helpers.config import compose_train_config

    backbone_inputs = []
    features = TransferLearningModel.features

    def counting_features(self, images):
        backbone_inputs.append(len(images))
        return features(self, images)

    monkeypatch.setattr(TransferLearningModel, "features", counting_features)

    def run(name: str) -> dict:
        backbone_inputs.clear()
        out = tmp_path / name
        out.mkdir()
        train(compose_train_config([*FAST, f"data.data_dir={image_folder}", "strategy=frozen",
                                    f"paths.output_dir={out}", "trainer.max_epochs=3",
                                    "trainer.deterministic=true",
                                    "figures.enabled=true"]))  # fmt: skip
        return {key: epoch_rows(out, key) for key in ("train/loss", "val/loss", "val/acc")}

    reused = run("reused")
    assert sum(backbone_inputs) == 3 * 12 + 8  # 3 epochs of training images, val once
    monkeypatch.setattr(feature_cache.CacheFeatures, "on_fit_start", lambda *args: None)
    every_epoch = run("every_epoch")
    assert sum(backbone_inputs) == 3 * 12 + 3 * 8 + 8  # and again for the best checkpoint
    assert reused == every_epoch


def test_cached_features_refuse_a_training_backbone(fast_config):
    from src.errors import UserError

    with pytest.raises(UserError, match="needs strategy=frozen"):
        train(fast_config("strategy=finetune", "data.cache_features=true"))


def test_run_without_callbacks_still_reports_the_best_accuracy(fast_config):
    summary = train(fast_config("callbacks=none", "trainer.max_epochs=2"))
    assert summary.best_ckpt is None
    assert 0.0 <= summary.best_val_acc <= 1.0


def test_cli_reports_a_bad_constructor_argument_without_a_traceback(image_folder, tmp_path):
    # Raised in the model's constructor, which hydra.utils.instantiate wraps.
    result = run_cli(*FAST, f"data.data_dir={image_folder}", f"model.weights={tmp_path}/no.pth",
                     f"hydra.run.dir={tmp_path}/run")  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert f"model.weights file not found: {tmp_path}/no.pth" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "logger", [*sorted(p.stem for p in (CONF_DIR / "logger").glob("*.yaml")), "[]"]
)
def test_every_logger_option_trains_to_the_end(fast_config, tmp_path, logger):
    """logger=none and logger=[] (no logger at all) too: what needs one is left out."""
    overrides = [f"logger={logger}", f"paths.log_dir={tmp_path / 'logs'}", "trainer.max_epochs=2"]
    summary = train(fast_config(*overrides))
    assert summary.epochs_trained == 2 and summary.best_ckpt is not None


def test_a_strategy_that_spawns_processes_is_refused_naming_ddp(fast_config):
    from src.errors import UserError

    with pytest.raises(UserError, match=r"trainer.strategy=ddp_spawn.*trainer=ddp_cpu"):
        train(fast_config("+trainer.strategy=ddp_spawn"))
