"""What each strategy trains, epoch by epoch, on a BatchNorm and a LayerNorm backbone.

Every run trains 3 epochs on generated images and records, per epoch, which weights and
BatchNorm statistics changed (tests/helpers/training.py). The expected set is the new head
plus every tensor of the stages that are open in that epoch, and nothing else.
"""

import csv
import shutil
from pathlib import Path

import pytest

from src.models.transfer import TransferLearningModel
from src.predict import predict
from src.train import train
from tests.helpers.config import FAST, compose_train_config
from tests.helpers.images import make_image_folder
from tests.helpers.training import read_record, record_overrides, stage_keys

EPOCHS = 3
HEAD = {"head.weight", "head.bias"}
BACKBONES = {
    # torchvision, BatchNorm (and dropout in its classifier stage), 13 stages
    "mobilenet_v3_small": {"backbone": "mobilenet_v3_small", "cnn": True},
    # timm, LayerNorm, class token and position embedding held by the model itself
    "timm_vit_tiny": {
        "backbone": "timm/vit_tiny_patch16_224",
        "backbone_kwargs": {"img_size": 32},
        "cnn": False,  # channels_last inputs only slow a transformer down
    },
}
STRATEGIES = {
    "finetune": ["strategy=finetune"],
    "frozen": ["strategy=frozen"],
    "lp_ft": ["strategy=lp_ft", "strategy.probe_epochs=1"],
    "gradual": ["strategy=gradual", "strategy.unfreeze_every=1", "model.layer_decay=0.5"],
}


def open_stages(strategy: str, epoch: int, num_stages: int) -> int:
    """How many backbone stages, from the top, the strategy trains in `epoch`."""
    return {
        "finetune": num_stages,
        "frozen": 0,
        "lp_ft": num_stages if epoch >= 1 else 0,
        "gradual": min(num_stages, epoch),
    }[strategy]


def backbone_overrides(name: str) -> list[str]:
    spec = BACKBONES[name]
    overrides = [f"model.backbone={spec['backbone']}", f"model.channels_last={spec['cnn']}"]
    for key, value in spec.get("backbone_kwargs", {}).items():
        overrides.append(f"+model.backbone_kwargs.{key}={value}")
    return overrides


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """`run(backbone, strategy, *overrides)`: the directory of that finished run (made once)."""
    root = tmp_path_factory.mktemp("strategies")
    data = make_image_folder(root / "data")
    done: dict[tuple, Path] = {}

    def run_once(backbone: str, strategy: str, *overrides: str) -> Path:
        key = (backbone, strategy, *overrides)
        if key not in done:
            out = root / f"run{len(done)}"
            out.mkdir()
            cfg = compose_train_config(
                [*FAST, f"data.data_dir={data}", f"paths.output_dir={out}",
                 f"trainer.max_epochs={EPOCHS}", "trainer.precision=32-true",
                 "optimizer.lr=0.01", *backbone_overrides(backbone),
                 *STRATEGIES[strategy], *record_overrides(out), *overrides]
            )  # fmt: skip
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
                train(cfg)
            done[key] = out
        return done[key]

    return run_once


def model_of(backbone: str) -> TransferLearningModel:
    spec = BACKBONES[backbone]
    return TransferLearningModel(
        num_classes=2, weights=None, backbone=spec["backbone"],
        backbone_kwargs=spec.get("backbone_kwargs"),
    )  # fmt: skip


def check_epoch(changed: set[str], backbone: str, strategy: str, epoch: int) -> None:
    """The head and every open stage changed; no tensor of a frozen stage did.

    (Open stages are checked stage by stage, not tensor by tensor: with random weights, a
    BatchNorm scale of 1.0 can get updates below float32's resolution.)
    """
    keys = stage_keys(model_of(backbone))
    opened = open_stages(strategy, epoch, len(keys))
    frozen, open_ = keys[: len(keys) - opened], keys[len(keys) - opened :]
    assert changed >= HEAD, epoch
    assert not changed - HEAD.union(*open_), f"epoch {epoch}: frozen weights changed"
    assert all(stage & changed for stage in open_), f"epoch {epoch}: an open stage did not train"
    assert not changed & set().union(*frozen)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_each_epoch_changes_the_head_and_the_open_stages_only(run, backbone, strategy):
    record = read_record(run(backbone, strategy))
    for epoch in range(EPOCHS):
        check_epoch(set(record[epoch]["changed"]), backbone, strategy, epoch)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gradual_opens_the_top_stage_first_and_keeps_the_input_side_frozen(run, backbone):
    record = read_record(run(backbone, "gradual"))
    keys = stage_keys(model_of(backbone))
    top, second, stem = keys[-1], keys[-2], keys[0]
    changed = [set(record[epoch]["changed"]) for epoch in range(EPOCHS)]
    assert changed[0] == HEAD
    assert top & changed[1] and not second & changed[1]
    assert top & changed[2] and second & changed[2]
    assert not stem & changed[2]  # neither weights nor BatchNorm statistics


def lr_rows(run_dir: Path) -> list[dict[str, float]]:
    """The learning rates LearningRateMonitor logged at the start of each epoch."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if not r["epoch"]]
    return [{k: float(v) for k, v in r.items() if k.startswith("lr-") and v} for r in rows]


def test_lp_ft_logs_the_head_and_backbone_rates_every_epoch(run):
    rows = lr_rows(run("timm_vit_tiny", "lp_ft"))
    assert rows[0] == {"lr-SGD/head": 0.01}
    for row in rows[1:]:
        assert row == pytest.approx({"lr-SGD/head": 0.01, "lr-SGD/backbone": 0.001})


def test_gradual_gives_each_opened_stage_its_decayed_rate(run):
    stages = [s.name for s in model_of("mobilenet_v3_small").stages]
    rows = lr_rows(run("mobilenet_v3_small", "gradual"))
    top, second = f"lr-SGD/backbone.{stages[-1]}", f"lr-SGD/backbone.{stages[-2]}"
    assert rows[0] == {"lr-SGD/head": 0.01}
    assert rows[1] == pytest.approx({"lr-SGD/head": 0.01, top: 0.01})
    assert rows[2] == pytest.approx({"lr-SGD/head": 0.01, top: 0.01, second: 0.005})


def test_finetune_with_layer_decay_gives_deeper_stages_smaller_rates():
    model = TransferLearningModel(
        num_classes=2, weights=None, layer_decay=0.5,
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
    )  # fmt: skip
    groups = model.configure_optimizers().param_groups
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("head", 0.1), ("backbone.layer4", 0.1), ("backbone.layer3", 0.05),
        ("backbone.layer2", 0.025), ("backbone.layer1", 0.0125), ("backbone.conv1+bn1", 0.00625),
    ]  # fmt: skip
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize(
    ("backbone", "strategy"), [("timm_vit_tiny", "lp_ft"), ("mobilenet_v3_small", "frozen")]
)
def test_cached_features_serve_the_frozen_epochs_and_images_the_rest(run, backbone, strategy):
    record = read_record(run(backbone, strategy, "data.cache_features=true"))
    for epoch in range(EPOCHS):
        opened = open_stages(strategy, epoch, 2)
        assert record[epoch]["input_ndim"] == ([4] if opened else [2]), epoch
        check_epoch(set(record[epoch]["changed"]), backbone, strategy, epoch)


def test_predict_works_from_a_non_resnet_checkpoint_alone(run, tmp_path):
    run_dir = run("mobilenet_v3_small", "finetune")
    lone = tmp_path / "lone"
    lone.mkdir()
    ckpt = shutil.copy(next((run_dir / "checkpoints").glob("best-*.ckpt")), lone / "model.ckpt")
    image = tmp_path / "ant.jpg"
    shutil.copy(run_dir.parent / "data" / "val" / "ants" / "ants_0.jpg", image)
    (row,) = predict(str(ckpt), [str(image)], top_k=2, image_size=32, resize_size=36)
    assert row["error"] is None
    assert sorted(row["labels"]) == ["ants", "bees"]
    assert sum(row["probs"]) == pytest.approx(1, abs=1e-5)
