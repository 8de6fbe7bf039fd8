"""Progress output: a rich bar with the epoch's metrics on a terminal, one line per epoch in
logs and pipes."""

import io
import logging
import re
from types import SimpleNamespace

import pytest
import torch

from src.runs.run_dir import read_metrics
from src.train import train
from src.training.progress import EpochLines, EpochMetricsBar, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_is_rich_on_a_terminal_and_plain_lines_elsewhere(monkeypatch):
    monkeypatch.setattr("sys.stdout", Terminal())
    assert isinstance(progress_bar(), EpochMetricsBar)
    monkeypatch.setattr("sys.stdout", io.StringIO())  # a pipe, a SLURM log file
    assert isinstance(progress_bar(), EpochLines)
    assert isinstance(progress_bar(interactive=True), EpochMetricsBar)
    assert progress_bar(enabled=False) is None


def test_the_rich_bar_shows_the_epoch_metrics():
    trainer = SimpleNamespace(
        callback_metrics={
            "val/acc": torch.tensor(0.75),
            "train/loss": torch.tensor(0.5),
            "val/class_acc/ants": torch.tensor(1.0),
        },
        progress_bar_metrics={},
        loggers=[],
    )
    shown = EpochMetricsBar().get_metrics(trainer, None)
    assert shown["val/acc"] == pytest.approx(0.75) and shown["train/loss"] == pytest.approx(0.5)
    assert "val/class_acc/ants" not in shown  # one per class: too many for a bar or a line


def test_without_a_terminal_each_epoch_is_one_line_of_its_metrics(fast_config, tmp_path, caplog):
    cfg = fast_config("trainer.enable_progress_bar=true", "trainer.max_epochs=2", "logger=csv")
    with caplog.at_level(logging.INFO, logger="src.training.progress"):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "src.training.progress"]
    assert [line.split(":")[0] for line in lines] == ["Epoch 0/1", "Epoch 1/1"]
    csv = read_metrics(tmp_path / "run" / "csv" / "metrics.csv")
    for epoch, line in enumerate(lines):
        for key in ("train/loss", "val/acc", "val/loss"):
            assert f"{key} {csv[key][epoch]:.4f}" in line
        assert re.search(r"lr 0\.001 \(\d+\.\d s\)$", line)
