"""How a training run behaves as a SLURM job of `hydra/launcher=slurm` (submitit).

One mechanism for stopping and starting again, the same as on a workstation:

- SIGTERM (`scancel --signal=TERM`, the time limit, preemption, `scontrol requeue`) stops
  training after the current batch (Lightning's handler); `last.ckpt` holds the last finished
  epoch and `summary.json` says `interrupted`.
- submitit asks SLURM for SIGUSR2 `hydra.launcher.signal_delay_s` seconds before the time
  limit. submitit's own handler would re-submit the job at once, mid-batch, or raise inside
  training; here SIGUSR2 instead stops training like SIGTERM, and the job then requeues itself
  (`scontrol requeue`) while it has been restarted fewer than `hydra.launcher.max_num_timeout`
  times.
- A job that SLURM starts again runs in the same directory and continues from its
  `last.ckpt` (src/runs/sweep_resume.py), as a resumed sweep does.

Lightning's own SLURM auto-requeue (SIGUSR1 -> an `hpc_ckpt_N.ckpt` mid-epoch, then a
requeue) is switched off, so that two handlers never act on one signal.
"""

import logging
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from src.runs.slurm import in_slurm_job, slurm_task_rank

log = logging.getLogger(__name__)


def lightning_slurm_plugins() -> list:
    """Trainer plugins for this process: in a job of hydra/launcher=slurm, Lightning's SLURM
    environment without its auto-requeue (ranks and addresses still come from SLURM)."""
    if not in_slurm_job():
        return []
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]


class SlurmJob:
    """This process as a task of a SLURM job (see `slurm_job`)."""

    def __init__(self, max_requeues: int) -> None:
        self.max_requeues = max_requeues
        self.warned = False  # SIGUSR2: the time limit is near

    @property
    def requeues_itself(self) -> bool:
        return self.warned and restart_count() < self.max_requeues

    def runs_again(self) -> bool:
        """After an interruption: whether SLURM will start this job again (its own requeue,
        or one that SLURM does: `scontrol requeue`, preemption), so that it must end
        without a result for the sweep to wait on."""
        return self.requeues_itself or requeue_underway()


@contextmanager
def slurm_job(output_dir: Path, max_requeues: int = 0) -> Iterator[SlurmJob | None]:
    """Within the block, when this process is a SLURM task of a sweep job: SIGUSR2 stops
    training like SIGTERM, rank>0 tasks log to their own file, and after a stop caused by
    SIGUSR2 the job requeues itself (at most `max_requeues` restarts). Yields the `SlurmJob`,
    or None outside SLURM."""
    if not in_slurm_job():
        yield None
        return
    job = SlurmJob(max_requeues)
    warning_signal = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))

    def stop_before_time_limit(signum, frame) -> None:
        if not job.warned:
            log.warning(
                "SLURM's time-limit warning (%s): stopping after this batch.",
                signal.Signals(signum).name,
            )
        job.warned = True
        signal.raise_signal(signal.SIGTERM)  # Lightning's handler: stop after this batch

    if slurm_task_rank() > 0:
        log_to(output_dir / f"train_ddp_process_{slurm_task_rank()}.log")
    previous = signal.signal(warning_signal, stop_before_time_limit)
    try:
        yield job
    finally:
        signal.signal(warning_signal, previous)
        if job.warned and slurm_task_rank() == 0:
            if job.requeues_itself:
                requeue()
            else:
                log.warning(
                    "Not requeued: restarted %d of hydra.launcher.max_num_timeout=%d times.",
                    restart_count(), max_requeues,
                )  # fmt: skip


def restart_count() -> int:
    """How many times SLURM has started this job before (0 on its first run)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def job_id() -> str:
    array_id, task_id = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_id}_{task_id}" if array_id else os.environ["SLURM_JOB_ID"]


def requeue_underway() -> bool:
    """Whether SLURM is requeueing this job: it counts the restart when the requeue starts."""
    try:
        info = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", job_id()],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    restarts = re.search(r"\bRestarts=(\d+)", info)
    return restarts is not None and int(restarts.group(1)) > restart_count()


def requeue() -> None:
    """Put this job back in the queue: SLURM ends this run and starts the job again."""
    result = subprocess.run(["scontrol", "requeue", job_id()], capture_output=True, text=True)
    if result.returncode == 0:
        log.warning("Requeued SLURM job %s: it continues from last.ckpt.", job_id())
    else:
        log.error("scontrol requeue %s failed: %s", job_id(), result.stderr.strip())


def log_to(path: Path) -> None:
    """Send this process's log file output to `path` instead of the run's train.log, which
    rank 0 writes (as Lightning's own DDP launcher does with hydra.job.name)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            replacement = logging.FileHandler(path)
            replacement.setFormatter(handler.formatter)
            replacement.setLevel(handler.level)
            root.removeHandler(handler)
            handler.close()
            root.addHandler(replacement)
