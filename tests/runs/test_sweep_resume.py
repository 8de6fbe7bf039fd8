"""A multirun that stopped half-way continues in its own directory: completed jobs keep
their results, the unfinished one continues from its last.ckpt, the rest run, and the sweep
summary ends as an uninterrupted sweep's."""

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from src.runs.resume import config_changes, resume_overrides
from tests.helpers.cli import run_cli
from tests.helpers.config import FAST, ROOT
from tests.helpers.hold import hold_overrides
from tests.helpers.images import make_image_folder

# Four deterministic 2-epoch jobs of the frozen strategy (seconds each on a CPU). Each job
# is held at its second epoch until `release_<job>` exists in the sweep directory (the same
# override in both sweeps, so their recorded overrides compare equal).
SWEEP = [*FAST, "strategy=frozen", "trainer.max_epochs=2", "trainer.deterministic=true",
         "optimizer.lr=0.05,0.01,0.005,0.001",
         *hold_overrides("${hydra:sweep.dir}/release_${hydra:job.num}")]  # fmt: skip


def release(sweep_dir: Path, *jobs: int) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        (sweep_dir / f"release_{job}").touch()


# What must match between a resumed and an uninterrupted sweep (not the wall time and paths).
COMPARED = ["job", "status", "best_val_acc", "best_epoch", "overrides", "error"]


def sweep_command(data: Path, sweep_dir: Path) -> list[str]:
    return ["-m", *SWEEP, f"data.data_dir={data}", f"hydra.sweep.dir={sweep_dir}"]


def summary_bytes(sweep_dir: Path, job: str) -> bytes:
    return (sweep_dir / job / "summary.json").read_bytes()


def epoch_rows_written(job_dir: Path, epoch: int) -> bool:
    """Whether metrics.csv holds the epoch's val and train rows. last.ckpt is written at the
    end of validation, a moment before the epoch's rows reach metrics.csv; a kill in that
    moment would lose them, which is not what this test is about."""
    path = job_dir / "csv" / "metrics.csv"
    lines = path.read_text().splitlines() if path.exists() else []
    return sum(line.startswith(f"{epoch},") for line in lines) == 2


def rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "sweep_summary.csv") as f:
        return [{key: row[key] for key in COMPARED} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_sweep_killed_in_its_third_job_resumes_to_the_uninterrupted_result(tmp_path):
    data = make_image_folder(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reference_dir, sweep_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    release(reference_dir, 0, 1, 2, 3)
    release(sweep_dir, 0, 1)  # the third job waits in its second epoch to be killed
    reference = subprocess.Popen(
        [sys.executable, "-m", "src.train", *sweep_command(data, reference_dir)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    killed = subprocess.Popen(
        [sys.executable, "-m", "src.train", *sweep_command(data, sweep_dir)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    third_job_epoch = sweep_dir / "2" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 900
    while not (third_job_epoch.exists() and epoch_rows_written(sweep_dir / "2", epoch=0)):
        assert killed.poll() is None, killed.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the third job never finished an epoch"
        time.sleep(0.05)
    killed.kill()  # SIGKILL: nothing of the sweep gets to clean up
    killed.communicate(timeout=60)
    assert not (sweep_dir / "2" / "summary.json").exists()
    assert not (sweep_dir / "3").exists()
    first_jobs = {job: summary_bytes(sweep_dir, job) for job in ("0", "1")}
    release(sweep_dir, 2, 3)

    result = run_cli("-m", f"resume={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert reference.wait(timeout=900) == 0
    assert rows(sweep_dir) == rows(reference_dir)
    assert [row["status"] for row in rows(sweep_dir)] == ["completed"] * 4
    # The two completed jobs were skipped, the third continued from its last.ckpt.
    assert {job: summary_bytes(sweep_dir, job) for job in first_jobs} == first_jobs
    third = yaml.safe_load((sweep_dir / "2" / "summary.json").read_text())
    assert third["resumed_from"] == str(third_job_epoch)
    metrics = [(d / "2" / "csv" / "metrics.csv").read_text() for d in (sweep_dir, reference_dir)]
    assert metrics[0] == metrics[1]


@pytest.mark.slow
def test_a_finished_optuna_search_resumed_with_joblib_skips_its_trials(tmp_path):
    """The seeded sampler proposes the same trials again (the skipped ones return their
    recorded values), so each lands on its own directory; a changed search is refused."""
    data = make_image_folder(tmp_path / "data")
    sweep_dir = tmp_path / "search"
    args = ["-m", *FAST, "strategy=frozen", "trainer.max_epochs=1", f"data.data_dir={data}",
            f"hydra.sweep.dir={sweep_dir}", "hparams_search=lr_gamma",
            "hydra.sweeper.n_trials=2"]  # fmt: skip
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p: p.read_bytes() for p in sweep_dir.glob("*/summary.json")}
    best = (sweep_dir / "optimization_results.yaml").read_text()

    again = run_cli("-m", f"resume={sweep_dir}", "hydra/launcher=joblib")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.read_bytes() for p in sweep_dir.glob("*/summary.json")} == before  # kept
    assert (sweep_dir / "optimization_results.yaml").read_text() == best
    assert "2 jobs: 2 completed." in (sweep_dir / "sweep_summary.md").read_text()

    changed = run_cli("-m", f"resume={sweep_dir}", "seed=7")
    assert changed.returncode != 0
    assert "holds a finished run of another config" in changed.stderr
    assert "seed: 42 before, 7 now" in changed.stderr
    assert summary_bytes(sweep_dir, "0") == before[sweep_dir / "0" / "summary.json"]


def test_resume_of_a_sweep_repeats_its_recorded_arguments(tmp_path):
    recorded = {
        "hydra": {
            "overrides": {
                "hydra": ["hydra.mode=MULTIRUN", "hydra/launcher=slurm", "hydra.sweep.dir=old"],
                "task": [
                    "strategy=frozen",
                    "optimizer.lr=0.01,0.001",
                    "seed=1",
                    "+tag=job_${hydra:job.num}",
                ],
            }
        }
    }
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(recorded))
    args = resume_overrides(["-m", f"resume={tmp_path}", "seed=2"])
    assert args == [
        "--multirun", "hydra/launcher=slurm", "strategy=frozen", "optimizer.lr=0.01,0.001",
        "+tag=job_${hydra:job.num}", "seed=2", f"hydra.sweep.dir={tmp_path}", "ckpt_path=last",
    ]  # fmt: skip


def test_config_changes_name_the_keys_that_differ_but_not_where_the_job_runs():
    before = {"optimizer": {"lr": 0.01}, "seed": 1, "ckpt_path": None,
              "paths": {"output_dir": "/old/place/0"}}  # fmt: skip
    now = {"optimizer": {"lr": 0.1}, "seed": 1, "ckpt_path": "last",
           "paths": {"output_dir": "/new/place/0"}}  # fmt: skip
    assert config_changes(before, now) == ["optimizer.lr: 0.01 before, 0.1 now"]
