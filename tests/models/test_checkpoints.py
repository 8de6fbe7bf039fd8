"""Checkpoints: atomic writes, a last.ckpt of the last epoch, clear errors for bad files."""

import os
from pathlib import Path

import pytest
import torch

from src.errors import UserError
from src.models.checkpoint import load_checkpoint
from src.train import train
from src.training.checkpoints import AtomicCheckpointIO


class ExplodesWhenPickled:
    def __reduce__(self):
        raise RuntimeError("killed mid-save")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "weights": torch.ones(1000)}, path)
    # The tensor is written before the pickler reaches the object that fails.
    with pytest.raises(RuntimeError, match="killed mid-save"):
        io.save_checkpoint({"weights": torch.zeros(100_000), "x": ExplodesWhenPickled()}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temporary file left behind


@pytest.fixture(scope="module")
def ckpt_run(tmp_path_factory):
    """One 3-epoch run on generated data; its checkpoints are reused by the tests below."""
    from tests.helpers.config import FAST, compose_train_config
    from tests.helpers.images import make_image_folder

    root = tmp_path_factory.mktemp("ckpt")
    data = make_image_folder(root / "data")
    (root / "run").mkdir()
    cfg = compose_train_config(
        [*FAST, f"data.data_dir={data}", f"paths.output_dir={root / 'run'}",
         "trainer.max_epochs=3", "optimizer.lr=0.05"]
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        return cfg, train(cfg)


def test_last_checkpoint_is_the_last_epoch_even_when_it_is_not_the_best(ckpt_run):
    _, summary = ckpt_run
    assert summary.best_epoch < 2  # the case where Lightning 2.6 kept the best epoch's copy
    assert torch.load(summary.last_ckpt, weights_only=True)["epoch"] == 2


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(UserError, match=r"Checkpoint not found: .*nope\.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_truncated_checkpoint_is_reported(ckpt_run, tmp_path):
    _, summary = ckpt_run
    data = Path(summary.last_ckpt).read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.ckpt cannot be read: it is truncated"):
        load_checkpoint(cut)


def test_checkpoint_of_another_model_is_reported(tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}, "epoch": 0}, other)
    with pytest.raises(UserError, match="from another model"):
        load_checkpoint(other)
    plain = tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, plain)
    with pytest.raises(UserError, match=r"not a Lightning checkpoint.*model\.weights"):
        load_checkpoint(plain)


def test_checkpoint_code_is_never_executed(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": ExplodesWhenLoaded()}, evil)
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(evil)


class ExplodesWhenLoaded:
    def __reduce__(self):
        return (os.system, ("echo should never run",))


def test_training_rejects_a_checkpoint_for_other_classes(ckpt_run, tmp_path):
    cfg, summary = ckpt_run
    from tests.helpers.images import make_image_folder

    three = make_image_folder(tmp_path / "three", classes=("a", "b", "c"))
    cfg.data.data_dir, cfg.paths.output_dir = str(three), str(tmp_path)
    cfg.ckpt_path = summary.last_ckpt
    with pytest.raises(UserError, match=r"predicts 2 classes \['ants', 'bees'\].*has 3"):
        train(cfg)


def test_ckpt_path_last_without_a_checkpoint_trains_from_the_start(ckpt_run, tmp_path):
    """As Lightning's own ckpt_path="last": what a job that SLURM restarts before its first
    checkpoint, or a multirun continued with resume=<sweep dir>, relies on."""
    cfg, _ = ckpt_run
    cfg.paths.output_dir, cfg.ckpt_path = str(tmp_path / "fresh"), "last"
    (tmp_path / "fresh").mkdir()
    summary = train(cfg)
    assert summary.resumed_from is None and summary.epochs_trained == cfg.trainer.max_epochs
