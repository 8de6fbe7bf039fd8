"""Impossible config values fail before any data is loaded, naming the key to fix."""

import pytest

from src.errors import UserError, find_cause
from src.train import train
from tests.helpers.config import FAST, compose_train_config


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.lr=-0.01", "optimizer.lr"),
        ("data.batch_size=0", "data.batch_size"),
        ("scheduler.gamma=0", "scheduler.gamma"),
        ("scheduler.gamma=1.5", "scheduler.gamma"),
        ("scheduler.step_size=0", "scheduler.step_size"),
        ("model.weights=IMAGENET_V9", "model.weights"),
        ("data.fold=5", "data.fold"),
        ("data.num_folds=1", "data.num_folds"),
        ("data.val_fraction=1.0", "data.val_fraction"),
        ("data.test_fraction=0.9", "data.test_fraction"),
        ("data.sampler=oversample", "data.sampler"),
        ("model.class_weights=inverse", "model.class_weights"),
        ("model.class_weights=[1,0]", "model.class_weights"),
        ("monitor_mode=best", "monitor_mode"),
    ],
)
def test_invalid_value_is_rejected_before_the_data_is_read(tmp_path, override, key):
    # The data folder does not exist: an error about it would mean the data was looked at.
    cfg = compose_train_config(
        [*FAST, f"data.data_dir={tmp_path}/absent", "data.download=false",
         f"paths.output_dir={tmp_path}", override]
    )  # fmt: skip
    assert f"Invalid {key}=" in user_error(cfg)


def user_error(cfg) -> str:
    """The message of the `UserError` that training `cfg` stops with (also when Hydra wrapped
    it, raised in a constructor that `instantiate` called)."""
    with pytest.raises(Exception) as caught:
        train(cfg)
    error = find_cause(caught.value, UserError)
    assert error is not None, caught.value
    return str(error)


def test_valid_edge_values_pass(tmp_path):
    from src.training.config_checks import check_config

    check_config(compose_train_config(["scheduler.gamma=1", "model.weights=null"]))
    check_config(compose_train_config(["model.weights=/some/file.pth", "data.batch_size=1"]))


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        (["monitor=val/loss"], "Add monitor_mode=min"),
        (["monitor_mode=min"], "Add monitor_mode=max"),
        (["callbacks.model_checkpoint.monitor=val/f1_macro"], "set monitor=val/f1_macro"),
    ],
)
def test_a_checkpoint_monitor_that_would_mislead_is_refused(fast_config, overrides, fix):
    assert fix in user_error(fast_config(*overrides))


def test_the_sweep_objective_and_its_direction_follow_the_monitor():
    from hydra import compose, initialize_config_dir

    from tests.helpers.config import CONF_DIR

    overrides = ["hparams_search=lr_gamma", "monitor=val/loss", "monitor_mode=min"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    assert cfg.optimized_metric == "val/loss_best"
    assert cfg.hydra.sweeper.direction == "minimize"
    assert cfg.callbacks.model_checkpoint.mode == "min"
