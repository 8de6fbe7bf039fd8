"""Every config group option composes, and the documented override keys exist."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from src.models.backbone import weights_preprocessing
from tests.helpers.config import CONF_DIR, compose_train_config

GROUPS = [
    "data", "model", "strategy", "trainer", "callbacks", "logger", "experiment", "debug",
    "hparams_search",
]  # fmt: skip
DOCUMENTED_KEYS = [
    "data.data_dir", "data.batch_size", "data.num_workers", "model.weights",
    "model.optimizer.lr", "model.optimizer.momentum", "model.scheduler.step_size",
    "model.scheduler.gamma", "trainer.max_epochs", "trainer.devices", "trainer.accelerator",
    "trainer.precision", "seed",
]  # fmt: skip


def group_options():
    for group in GROUPS:
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            yield group, path.stem


@pytest.mark.parametrize(("group", "option"), list(group_options()))
def test_every_group_option_composes(group, option):
    cfg = compose_train_config([f"{group}={option}"])
    assert cfg.model.freeze_backbone in (True, False)


def test_defaults_are_the_tutorial_recipe():
    cfg = compose_train_config([])
    assert cfg.strategy.name == "finetune"
    assert cfg.model.freeze_backbone is False
    assert cfg.model.weights == "IMAGENET1K_V1"
    assert cfg.data.batch_size == 4
    assert cfg.trainer.max_epochs == 25
    assert (cfg.model.optimizer.lr, cfg.model.optimizer.momentum) == (0.001, 0.9)
    assert (cfg.model.scheduler.step_size, cfg.model.scheduler.gamma) == (7, 0.1)
    # The tutorial's preprocessing is what the default weights prescribe.
    weights = weights_preprocessing(cfg.model.backbone, cfg.model.weights)
    pre = Preprocessing.resolve(weights, image_size=cfg.data.image_size)
    assert (pre.image_size, pre.resize_size, pre.interpolation) == (224, 256, "bilinear")
    assert pre.mean == IMAGENET_MEAN and pre.std == IMAGENET_STD


def test_frozen_strategy_freezes_the_backbone():
    assert compose_train_config(["strategy=frozen"]).model.freeze_backbone is True


@pytest.mark.parametrize("key", DOCUMENTED_KEYS)
def test_documented_keys_can_be_overridden(key):
    cfg = compose_train_config([f"{key}=7"])
    assert OmegaConf.select(cfg, key) == 7


def test_unknown_strategy_lists_the_options():
    with pytest.raises(
        ConfigCompositionException, match=r"(?s)strategy/unfrozen.*finetune.*frozen"
    ):
        compose_train_config(["strategy=unfrozen"])
