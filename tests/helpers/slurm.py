"""The local single-node SLURM cluster of .ci/slurm_cluster.sh, for the tests that submit jobs."""

import os
import subprocess
import time
from pathlib import Path

from tests.helpers.config import ROOT

CLUSTER_SCRIPT = ROOT / ".ci" / "slurm_cluster.sh"
PARTITION = os.environ.get("SLURM_LOCAL_PARTITION", "debug")


def cluster(command: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """`.ci/slurm_cluster.sh <command>` (start, stop, status)."""
    return subprocess.run(
        [str(CLUSTER_SCRIPT), command], capture_output=True, text=True, timeout=timeout
    )


def sweep_job_ids(sweep_dir: Path) -> list[str]:
    """The SLURM job ids of a sweep's jobs, from the folders submitit made for them."""
    folders = (sweep_dir / ".submitit").iterdir() if (sweep_dir / ".submitit").is_dir() else []
    return sorted(p.name for p in folders if p.name.replace("_", "").isdigit())


def job_state(job_id: str) -> str:
    """The job's state (RUNNING, PENDING, COMPLETED, ...), as long as SLURM remembers it."""
    out = subprocess.run(
        ["squeue", "--array", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T"],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    return out.strip()


def wait_for(condition, what: str, process: subprocess.Popen | None = None, timeout=300):
    """Poll `condition()` until it is true; fail with `what` on a timeout or when `process`
    ended first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: {process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def job_after_first_epoch(sweep_dir: Path, process: subprocess.Popen) -> str:
    """The id of the sweep's only SLURM job, once its first epoch is in last.ckpt."""
    wait_for((sweep_dir / "0" / "checkpoints" / "last.ckpt").exists, "last.ckpt", process)
    (job_id,) = sweep_job_ids(sweep_dir)
    return job_id
