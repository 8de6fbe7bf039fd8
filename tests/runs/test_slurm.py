"""Sweeps on a real SLURM cluster: the single-node one of .ci/slurm_cluster.sh (fixture
`slurm_partition`; the tests skip with the reason where it cannot be started).

Each test submits `python -m src.train -m hydra/launcher=slurm ...` as a user would, on tiny
generated images, and checks what the jobs leave in the sweep directory.
"""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from src.runs.slurm import SqueueWatcher
from tests.helpers.cli import run_cli
from tests.helpers.config import CONF_DIR, FAST, ROOT
from tests.helpers.hold import hold_overrides
from tests.helpers.images import make_image_folder
from tests.helpers.slurm import job_after_first_epoch, job_state, sweep_job_ids, wait_for

JOB_FILES = {".hydra", "checkpoints", "config.yaml", "csv", "job_status.json", "summary.json",
             "train.log"}  # fmt: skip


def slurm_args(partition: str, sweep_dir: Path, data: Path, *args: str) -> list[str]:
    return ["-m", *FAST, "hydra/launcher=slurm", f"hydra.launcher.partition={partition}",
            f"hydra.sweep.dir={sweep_dir}", f"data.data_dir={data}", *args]  # fmt: skip


def start_sweep(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "src.train", *args],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def summary(job_dir: Path) -> dict:
    return json.loads((job_dir / "summary.json").read_text())


def metric_rows(job_dir: Path, epoch: int) -> list[str]:
    """The rows of metrics.csv logged at the end of `epoch` (its val and train rows)."""
    rows = (job_dir / "csv" / "metrics.csv").read_text().splitlines()[1:]
    return [r for r in rows if r.startswith(f"{epoch},")]


def assert_continued_to_the_end(sweep_dir: Path) -> None:
    """The sweep's one job continued from its last.ckpt and trained the 3 epochs once each."""
    job_dir = sweep_dir / "0"
    resumed = summary(job_dir)
    assert resumed["resumed_from"] == str(job_dir / "checkpoints" / "last.ckpt")
    assert (resumed["epochs_trained"], resumed["interrupted"]) == (3, False)
    assert [len(metric_rows(job_dir, epoch)) for epoch in range(3)] == [2, 2, 2]
    assert [row["status"] for row in read_rows(sweep_dir)] == ["completed"]


@pytest.fixture
def sweep_dir(tmp_path):
    """The sweep's directory; jobs of it still queued or running after the test (one that
    failed half-way) are cancelled, so that they do not hold the cluster's CPUs."""
    path = tmp_path / "sweep"
    yield path
    jobs = sweep_job_ids(path)
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True)


# Three epochs, held at the start of the second one until the job is signalled.
def recipe(release: Path) -> list[str]:
    return ["strategy=frozen", "trainer.max_epochs=3", "trainer.deterministic=true",
            *hold_overrides(release)]  # fmt: skip


@pytest.mark.slow
def test_cpu_partition_sweep_with_default_resources(slurm_partition, image_folder, sweep_dir):
    # Nothing but the partition is set for SLURM: cpus, memory and GPUs come from the config.
    sweep = ["strategy=frozen", "trainer.max_epochs=1", "optimizer.lr=0.01,0.001"]
    result = run_cli(*slurm_args(slurm_partition, sweep_dir, image_folder, *sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    # The default trainer (accelerator auto) asks for no GPU: CPU partitions accept the jobs.
    (array_id,) = {name.split("_")[0] for name in sweep_job_ids(sweep_dir)}
    script = (sweep_dir / ".submitit" / array_id / f"{array_id}_submission.sh").read_text()
    assert "--gpus-per-node" not in script and "--gres" not in script
    assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH --mem-per-cpu=4G" in script
    rows = {row["job"]: row for row in read_rows(sweep_dir)}
    assert set(rows) == {"0", "1"}
    for job, row in rows.items():
        job_dir = sweep_dir / job
        assert {p.name for p in job_dir.iterdir()} >= JOB_FILES
        assert row["status"] == "completed"
        assert float(row["best_val_acc"]) == pytest.approx(summary(job_dir)["best_val_acc"])
    assert "2 jobs: 2 completed." in (sweep_dir / "sweep_summary.md").read_text()


def read_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "sweep_summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_slurm_tasks_train_one_ddp_run_that_single_process_eval_confirms(
    slurm_partition, sweep_dir, tmp_path
):
    from src.eval import evaluate

    data = make_image_folder(
        tmp_path / "data", classes=("a", "b", "c"), train_per_class=4, val_per_class=3
    )
    result = run_cli(*slurm_args(
        slurm_partition, sweep_dir, data, "trainer=ddp_cpu", "hydra.launcher.cpus_per_task=1",
        "trainer.precision=32-true", "strategy=finetune", "optimizer.lr=0.01",
        "trainer.max_epochs=1",
    ))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (job_id,) = sweep_job_ids(sweep_dir)
    # SLURM started both processes (one result per task); Lightning took the ranks from it.
    assert {p.name for p in (sweep_dir / ".submitit" / job_id).glob("*_result.pkl")} == {
        f"{job_id}_0_result.pkl",
        f"{job_id}_1_result.pkl",
    }
    job_dir = sweep_dir / "0"
    assert (job_dir / "train_ddp_process_1.log").is_file()
    ddp = summary(job_dir)
    assert ddp["val_size"] == 9
    single = evaluate(run_dir=job_dir)  # one process, every validation image once
    assert single["num_images"] == 9
    assert ddp["best_ckpt_val_acc"] == pytest.approx(single["acc"])
    assert ddp["best_val_acc"] == pytest.approx(single["acc"])


@pytest.mark.slow
def test_scancel_term_stops_the_job_after_a_batch_and_the_sweep_resumes_it(
    slurm_partition, image_folder, sweep_dir, release
):
    process = start_sweep(*slurm_args(slurm_partition, sweep_dir, image_folder, *recipe(release)))
    job_id = job_after_first_epoch(sweep_dir, process)
    subprocess.run(["scancel", "--signal=TERM", job_id], check=True)
    stderr = process.communicate(timeout=900)[1]
    release.touch()
    assert process.returncode != 0
    job_dir = sweep_dir / "0"
    stopped = summary(job_dir)
    assert stopped["interrupted"] and stopped["interrupted_by"] == "SIGTERM"
    last = torch.load(job_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == stopped["epochs_trained"] - 1 < 2
    # The sweep names the job, why it stopped, how to continue and where its logs are.
    assert "Job 0 of the sweep" in stderr and "Interrupted by SIGTERM" in stderr
    assert f"python -m src.train -m resume={sweep_dir}" in stderr
    log = sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.out"
    assert str(log) in stderr and log.is_file()
    first_epoch = metric_rows(job_dir, 0)

    result = run_cli("-m", f"resume={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_continued_to_the_end(sweep_dir)
    assert metric_rows(job_dir, 0) == first_epoch


@pytest.mark.slow
def test_time_limit_warning_requeues_the_job_which_continues_from_last_ckpt(
    slurm_partition, image_folder, sweep_dir, release
):
    process = start_sweep(*slurm_args(
        slurm_partition, sweep_dir, image_folder, *recipe(release),
        "hydra.launcher.max_num_timeout=1",
    ))  # fmt: skip
    job_id = job_after_first_epoch(sweep_dir, process)
    # What SLURM sends signal_delay_s before the time limit.
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    wait_for(lambda: job_state(job_id) == "PENDING", "the requeued job", process)
    release.touch()
    # SLURM holds a requeued job for two minutes; let it start sooner, but not within the
    # second its first run was killed in: slurmd refuses a job credential issued in the same
    # second as the revoked one ("Job credential revoked") and SLURM fails the job (CI saw it).
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)
    stderr = process.communicate(timeout=900)[1]
    assert process.returncode == 0, stderr[-3000:]
    assert_continued_to_the_end(sweep_dir)


@pytest.mark.slow
def test_a_job_failing_inside_slurm_names_its_cause_and_logs_and_the_other_completes(
    slurm_partition, image_folder, sweep_dir
):
    result = run_cli(*slurm_args(
        slurm_partition, sweep_dir, image_folder, "strategy=frozen", "trainer.max_epochs=1",
        "hydra.launcher.cpus_per_task=1", "data.batch_size=0,4",
    ))  # fmt: skip
    assert result.returncode != 0
    assert "Job 0 of the sweep" in result.stderr and "failed in SLURM job" in result.stderr
    assert "Invalid data.batch_size=0" in result.stderr
    assert "Traceback" not in result.stderr
    logs = result.stderr.split("Its logs: ", 1)[1].split()[0].rstrip(",")
    assert Path(logs).is_file()
    rows = {row["job"]: row["status"] for row in read_rows(sweep_dir)}
    assert rows == {"0": "failed", "1": "completed"}
    assert (sweep_dir / "1" / "summary.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hydra.launcher.partition=no_such_partition", "Invalid partition name specified"),
        ("hydra.launcher.cpus_per_task=512", "Requested node configuration is not available"),
        ("trainer=gpu", "--gpus-per-node=1"),  # the CI cluster has no GPUs
    ],
)
def test_a_request_slurm_cannot_serve_stops_before_submitting(
    slurm_partition, image_folder, sweep_dir, override, message
):
    result = run_cli(*slurm_args(slurm_partition, sweep_dir, image_folder, override))
    assert result.returncode == 2
    assert "SLURM refuses the jobs of this sweep" in result.stderr + result.stdout
    assert message in result.stderr + result.stdout
    assert not sweep_job_ids(sweep_dir)


def test_missing_sbatch_is_named_before_anything_runs(image_folder, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "src.train", *slurm_args("x", tmp_path / "sweep", image_folder)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "PATH": str(empty)},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 2
    assert "sbatch, which is not on this machine's PATH" in result.stderr + result.stdout


def launcher(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm", *overrides],
                      return_hydra_config=True)  # fmt: skip
    return cfg.hydra.launcher


def test_slurm_jobs_ask_for_gpus_only_when_the_trainer_uses_them():
    cpu, gpu = launcher(), launcher("trainer=gpu")
    ddp = launcher("trainer=ddp", "trainer.devices=4")
    assert (cpu.gpus_per_node, cpu.tasks_per_node, cpu.cpus_per_task) == (None, 1, 2)
    assert (gpu.gpus_per_node, gpu.tasks_per_node, gpu.cpus_per_task) == (1, 1, 8)
    assert (ddp.gpus_per_node, ddp.tasks_per_node) == (4, 4)
    assert cpu.mem_per_cpu == gpu.mem_per_cpu == "4G"


def test_squeue_watcher_counts_a_job_squeue_forgot_as_ended():
    watcher = SqueueWatcher(delay_s=60)
    for job_id in ("7_0", "7_1", "8"):
        watcher.register_job(job_id)
    info = watcher.read_info("7_0|RUNNING|vm\n7_1|PENDING|\n")
    assert {job: state["State"] for job, state in info.items()} == {
        "7_0": "RUNNING",
        "7_1": "PENDING",
        "8": "ENDED",
    }


def test_squeue_watcher_waits_on_every_state_slurm_still_runs_a_job_from():
    watcher = SqueueWatcher(delay_s=60)
    squeue = "1|CONFIGURING|vm\n2|SUSPENDED|vm\n3|REQUEUE_HOLD|\n4|FAILED|vm\n5|COMPLETED|vm\n"
    for job_id in "12345":
        watcher.register_job(job_id)
    watcher._info_dict.update(watcher.read_info(squeue))
    done = {job_id: watcher.is_done(job_id, mode="cache") for job_id in "12345"}
    assert done == {"1": False, "2": False, "3": False, "4": True, "5": True}
