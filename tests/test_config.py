"""Every option of every config group composes, and every option of the recipe's groups
trains; the options are found by listing conf/, so a new file is tested without a list to
update."""

import pytest
from hydra.errors import ConfigCompositionException

from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from src.errors import UserError, check_command_line
from src.models.backbone import weights_preprocessing
from src.train import train
from tests.helpers.config import CONF_DIR, compose_train_config

# The groups whose options are the training recipe: each one is trained with below.
RECIPE = ("augment", "head", "loss", "optimizer", "scheduler", "metrics", "strategy")


def options(*groups: str):
    """(group, option) of every YAML file in the config group folders (all but hydra's)."""
    folders = [CONF_DIR / g for g in groups] or [
        p for p in sorted(CONF_DIR.iterdir()) if p.is_dir() and p.name != "hydra"
    ]
    return [(f.name, p.stem) for f in folders for p in sorted(f.glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), options())
def test_every_group_option_composes(group, option):
    cfg = compose_train_config([f"{group}={option}"])
    assert cfg.model.freeze_backbone in (True, False)


@pytest.mark.parametrize(("group", "option"), options(*RECIPE))
def test_every_option_of_the_recipe_trains(group, option, fast_config):
    overrides = [f"{group}={option}", "trainer.max_epochs=2"]
    if group == "strategy":  # two epochs: one with the head alone, one with the backbone
        overrides += ["++strategy.probe_epochs=1", "++strategy.unfreeze_every=1"]
    summary = train(fast_config(*overrides))
    assert summary.epochs_trained == 2 and summary.best_ckpt is not None


def test_defaults_are_the_tutorial_recipe():
    cfg = compose_train_config([])
    assert cfg.strategy.name == "finetune"
    assert cfg.model.freeze_backbone is False
    assert cfg.model.weights == "IMAGENET1K_V1"
    assert cfg.data.batch_size == 4
    assert cfg.trainer.max_epochs == 25
    assert cfg.head._target_ == "torch.nn.Linear"
    assert (cfg.loss._target_, cfg.loss.label_smoothing) == ("torch.nn.functional.cross_entropy", 0)
    assert (cfg.optimizer._target_, cfg.optimizer.lr, cfg.optimizer.momentum) == (
        "torch.optim.SGD", 0.001, 0.9,
    )  # fmt: skip
    assert (cfg.scheduler.step_size, cfg.scheduler.gamma, cfg.scheduler.interval) == (
        7,
        0.1,
        "epoch",
    )
    assert (tuple(cfg.augment.scale), cfg.augment.hflip, cfg.augment.policy) == (
        (0.08, 1.0),
        0.5,
        None,
    )
    # The tutorial's preprocessing is what the default weights prescribe.
    weights = weights_preprocessing(cfg.model.backbone, cfg.model.weights)
    pre = Preprocessing.resolve(weights, image_size=cfg.data.image_size)
    assert (pre.image_size, pre.resize_size, pre.interpolation) == (224, 256, "bilinear")
    assert pre.mean == IMAGENET_MEAN and pre.std == IMAGENET_STD


def test_frozen_strategy_freezes_the_backbone():
    assert compose_train_config(["strategy=frozen"]).model.freeze_backbone is True


def test_switching_the_optimizer_replaces_its_settings():
    cfg = compose_train_config(["optimizer=adamw"])
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and "momentum" not in cfg.optimizer


def test_a_renamed_key_names_its_new_name():
    with pytest.raises(UserError, match=r"model.optimizer is now optimizer: write optimizer.lr"):
        check_command_line(["strategy=frozen", "model.optimizer.lr=0.01"])
    with pytest.raises(UserError, match=r"write scheduler._target_"):
        check_command_line(["model.scheduler._target_=torch.optim.lr_scheduler.ExponentialLR"])


def test_unknown_strategy_lists_the_options():
    with pytest.raises(
        ConfigCompositionException, match=r"(?s)strategy/unfrozen.*finetune.*frozen"
    ):
        compose_train_config(["strategy=unfrozen"])
