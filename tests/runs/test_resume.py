"""Interrupted runs stop cleanly, resume in place, and end where an uninterrupted run ends.

These start `python -m src.train` as a subprocess, held at the start of an epoch (see
tests/helpers/hold.py), and signal or kill it once `last.ckpt` holds the epoch before.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.train import train
from tests.helpers.cli import run_cli
from tests.helpers.config import FAST, ROOT, compose_train_config
from tests.helpers.hold import hold_overrides
from tests.helpers.images import make_image_folder

pytestmark = pytest.mark.slow

RECIPE = [
    *FAST,
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "optimizer.lr=0.01",
    "scheduler.step_size=1",
    "scheduler.gamma=0.5",
]


@pytest.fixture
def data(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data")


def start(run_dir: Path, data: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "src.train", *RECIPE, f"data.data_dir={data}",
         f"hydra.run.dir={run_dir}", *overrides],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job ignores SIGINT; Python would then never raise Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def wait_for_first_checkpoint(
    process: subprocess.Popen, run_dir: Path, timeout=900, epoch: int = 0
) -> None:
    """Wait until `last.ckpt` holds `epoch` or a later one."""
    last, deadline = run_dir / "checkpoints" / "last.ckpt", time.monotonic() + timeout
    while not last.exists() or torch.load(last, weights_only=True)["epoch"] < epoch:
        if process.poll() is not None:
            pytest.fail(f"training exited early: {process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("no last.ckpt appeared")
        time.sleep(0.05)


def metrics_rows(run_dir: Path) -> list[str]:
    return (run_dir / "csv" / "metrics.csv").read_text().splitlines()


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_signal_stops_cleanly_and_marks_the_summary_interrupted(tmp_path, data, release, sig, code):
    run_dir = tmp_path / "run"
    process = start(run_dir, data, *hold_overrides(release))
    wait_for_first_checkpoint(process, run_dir)
    process.send_signal(sig)
    stderr = process.communicate(timeout=900)[1]
    assert process.returncode == code, stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["interrupted_by"] == sig.name
    assert summary["epochs_trained"] < 3
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == summary["epochs_trained"] - 1  # the last finished epoch
    assert f"python -m src.train resume={run_dir}" in (run_dir / "train.log").read_text()


def test_run_killed_after_an_epoch_resumes_to_the_uninterrupted_result(tmp_path, data, release):
    reference = subprocess.Popen(
        [sys.executable, "-m", "src.train", *RECIPE, f"data.data_dir={data}",
         f"hydra.run.dir={tmp_path / 'reference'}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    run_dir = tmp_path / "killed"
    process = start(run_dir, data, *hold_overrides(release))
    wait_for_first_checkpoint(process, run_dir)
    process.kill()  # SIGKILL: no handler runs, nothing is cleaned up
    process.communicate(timeout=60)
    assert not (run_dir / "summary.json").exists()
    killed_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert killed_at == 0
    release.touch()

    result = run_cli(f"resume={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert reference.wait(timeout=900) == 0
    resumed = json.loads((run_dir / "summary.json").read_text())
    uninterrupted = json.loads((tmp_path / "reference" / "summary.json").read_text())
    assert resumed["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert resumed["epochs_trained"] == 3
    assert resumed["best_val_acc"] == uninterrupted["best_val_acc"]
    assert resumed["best_epoch"] == uninterrupted["best_epoch"]
    # Every epoch's metrics (loss, accuracy, learning rate) once, equal to the reference's.
    assert metrics_rows(run_dir) == metrics_rows(tmp_path / "reference")


def test_same_seed_in_deterministic_mode_repeats_every_epoch(image_folder, tmp_path):
    def run(name: str) -> list[str]:
        out = tmp_path / name
        out.mkdir()
        cfg = compose_train_config(
            [*RECIPE, "trainer.max_epochs=2", "seed=7", f"data.data_dir={image_folder}",
             f"paths.output_dir={out}"]
        )  # fmt: skip
        train(cfg)
        return metrics_rows(out)

    first, second = run("first"), run("second")
    assert len(first) == 1 + 2 * 3  # header, then lr, val and train rows per epoch
    assert first == second


def test_gradual_run_killed_mid_phase_resumes_to_the_uninterrupted_result(tmp_path, data, release):
    # 4 epochs: the head alone, then one more mobilenet stage opened in each epoch. Killed
    # after epoch 1, the resumed run must restore the opened stages, their optimizer groups
    # with their momentum, and their learning rates.
    staged = ["strategy=gradual", "strategy.unfreeze_every=1", "model.layer_decay=0.5",
              "model.backbone=mobilenet_v3_small", "trainer.max_epochs=4"]  # fmt: skip
    reference = start(tmp_path / "reference", data, *staged)
    run_dir = tmp_path / "killed"
    process = start(run_dir, data, *staged, *hold_overrides(release, epoch=2))
    wait_for_first_checkpoint(process, run_dir, epoch=1)
    process.kill()
    process.communicate(timeout=60)
    killed_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert killed_at == 1
    release.touch()

    result = run_cli(f"resume={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert reference.wait(timeout=900) == 0, reference.stderr.read()[-3000:]
    resumed = json.loads((run_dir / "summary.json").read_text())
    uninterrupted = json.loads((tmp_path / "reference" / "summary.json").read_text())
    assert resumed["epochs_trained"] == 4
    assert resumed["best_val_acc"] == uninterrupted["best_val_acc"]
    # Losses, accuracies and every group's learning rate, epoch by epoch.
    assert metrics_rows(run_dir) == metrics_rows(tmp_path / "reference")
