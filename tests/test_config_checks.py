"""Impossible config values fail before any data is loaded, naming the key to fix."""

import pytest

from src.errors import UserError
from src.train import train
from tests.helpers.config import FAST, compose_train_config


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.optimizer.lr=0", "model.optimizer.lr"),
        ("model.optimizer.lr=-0.01", "model.optimizer.lr"),
        ("data.batch_size=0", "data.batch_size"),
        ("model.scheduler.gamma=0", "model.scheduler.gamma"),
        ("model.scheduler.gamma=1.5", "model.scheduler.gamma"),
        ("model.scheduler.step_size=0", "model.scheduler.step_size"),
        ("strategy.name=unfrozen", "strategy.name"),
        ("model.weights=IMAGENET_V9", "model.weights"),
        ("data.fold=5", "data.fold"),
        ("data.num_folds=1", "data.num_folds"),
        ("data.val_fraction=1.0", "data.val_fraction"),
        ("data.test_fraction=0.9", "data.test_fraction"),
    ],
)
def test_invalid_value_is_rejected_before_the_data_is_read(tmp_path, override, key):
    # The data folder does not exist: an error about it would mean the data was looked at.
    cfg = compose_train_config(
        [*FAST, f"data.data_dir={tmp_path}/absent", "data.download=false",
         f"paths.output_dir={tmp_path}", override]
    )  # fmt: skip
    with pytest.raises(UserError, match=rf"Invalid {key}="):
        train(cfg)


def test_valid_edge_values_pass(tmp_path):
    from src.training.config_checks import check_config

    check_config(compose_train_config(["model.scheduler.gamma=1", "model.weights=null"]))
    check_config(compose_train_config(["model.weights=/some/file.pth", "data.batch_size=1"]))
