"""Multiruns on a SLURM cluster (`hydra/launcher=slurm`, the submitit launcher): the Hydra
callback that checks a sweep before submitting it and handles SLURM's signals in its jobs."""

import getpass
import logging
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from submitit import JobEnvironment
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

from src.runs.resume import RunInterrupted

log = logging.getLogger(__name__)

# The launcher's keys that are `sbatch` options of the same name (with dashes).
SBATCH_KEYS = "partition nodes cpus_per_task gpus_per_node mem_per_cpu qos account constraint"


def if_gpu(accelerator: Any, then: Any, otherwise: Any) -> Any:
    """`${if_gpu:${trainer.accelerator},A,B}` in a config: A when the trainer is told to train on
    GPUs (accelerator gpu or cuda; `auto` is not), else B."""
    return then if str(accelerator).lower() in ("gpu", "cuda") else otherwise


OmegaConf.register_new_resolver("if_gpu", if_gpu, replace=True)


def task_rank() -> int:
    """This task's rank among the SLURM job's tasks (0 outside a job of this launcher)."""
    in_job = os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in os.environ
    return int(os.environ.get("SLURM_PROCID", "0")) if in_job else 0


class SlurmJobFailed(CompactHydraException):
    """A sweep job that failed or stopped on the cluster; Hydra prints only this message."""


class SlurmJobs(Callback):
    """Stops a sweep SLURM would refuse before its first job (exit code 2). In a job, SIGUSR2
    (`signal_delay_s` before the time limit) stops training like SIGTERM does, after the current
    batch, and requeues the job while it has restarts left (`max_num_timeout`); a job that
    failed or will not run again is reported to the sweep with the paths of its logs."""

    warned = False  # SIGUSR2 came: the time limit is near

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if problem := submission_problem(config.hydra.launcher):
            log.error("%s", problem)
            raise SystemExit(2)
        # submitit's job watcher calls sacct, which a cluster without job accounting lacks.
        no_sacct = "accounting_storage/none" in (slurm(["scontrol", "show", "config"]) or "")
        if no_sacct and not isinstance(SlurmJob.watcher, SqueueWatcher):
            SlurmJob.watcher = SqueueWatcher(delay_s=60)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
            return
        warning = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
        signal.signal(warning, self.stop_before_time_limit)
        if task_rank() == 0:  # rank 0 writes train.log, as Lightning's own DDP launcher does
            return
        # The other tasks send their log file output to a file of their own.
        path = Path(config.hydra.runtime.output_dir) / f"train_ddp_process_{task_rank()}.log"
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            replacement = logging.FileHandler(path)
            replacement.setFormatter(handler.formatter)
            replacement.setLevel(handler.level)
            root.removeHandler(handler)
            handler.close()
            root.addHandler(replacement)

    def stop_before_time_limit(self, signum, frame) -> None:
        if not self.warned:
            log.warning("SLURM's time-limit warning: stopping after this batch.")
        self.warned = True
        signal.raise_signal(signal.SIGTERM)  # Lightning's handler: stop after this batch

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED or task_rank() or "SLURM_JOB_ID" not in os.environ:
            return
        error = job_return._return_value  # `.return_value` would raise it
        max_requeues = config.hydra.launcher.get("max_num_timeout") or 0
        if isinstance(error, RunInterrupted) and self.runs_again(max_requeues):
            raise SystemExit(143)  # no result: the sweep waits for the job's next run
        job = config.hydra.job
        ended = "was stopped" if isinstance(error, RunInterrupted) else "failed"
        paths = JobEnvironment().paths
        message = (
            f"Job {job.num} of the sweep ({' '.join(config.hydra.overrides.task)}) {ended} "
            f"in SLURM job {job.id}: {type(error).__name__}: {error}\n"
            f"Its logs: {paths.stdout}, {paths.stderr} and "
            f"{Path(config.hydra.runtime.output_dir) / 'train.log'}"
        )
        failed = SlurmJobFailed(message)  # the sweeper re-raises it in the submitting process
        failed.__cause__ = error
        job_return._return_value = failed

    def runs_again(self, max_requeues: int) -> bool:
        """After an interruption: whether SLURM starts this job again (after SIGTERM, SLURM may be
        requeueing it: `scontrol requeue`, preemption)."""
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        job_id = JobEnvironment().job_id  # array_task for a job of an array
        if not self.warned:
            info = slurm(["scontrol", "show", "job", "--oneliner", job_id])
            counted = re.search(r"\bRestarts=(\d+)", info or "")
            return counted is not None and int(counted.group(1)) > restarts
        if restarts >= max_requeues:
            log.warning(
                "Not requeued: restarted %d of max_num_timeout=%d times.", restarts, max_requeues
            )
            return False
        if slurm(["scontrol", "requeue", job_id]) is not None:
            log.warning("Requeued SLURM job %s: it continues from last.ckpt.", job_id)
        return True


def slurm(command: list[str]) -> str | None:
    """The output of a SLURM command, or None (logged) when it fails."""
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
        return run.stdout
    except (OSError, subprocess.SubprocessError) as err:
        log.error("%s failed: %s", " ".join(command), getattr(err, "stderr", None) or err)
        return None


def submission_problem(launcher: DictConfig) -> str | None:
    """Why sbatch would refuse this sweep's jobs, or SLURM could never start them, or None."""
    if shutil.which("sbatch") is None:
        return (
            "hydra/launcher=slurm submits every job with sbatch, which is not on this "
            "machine's PATH. Run the sweep where SLURM's commands are (a login node), or here "
            "with a local launcher: drop hydra/launcher=slurm, or use hydra/launcher=joblib."
        )
    tasks = launcher.tasks_per_node
    if not isinstance(tasks, int) or tasks < 1:
        return (
            f"hydra.launcher.tasks_per_node={tasks!r}: SLURM starts one task per device, so "
            "give trainer.devices as a number (not auto or -1) for a SLURM sweep."
        )
    request = {key.replace("_", "-"): launcher.get(key) for key in SBATCH_KEYS.split()}
    request |= {"ntasks-per-node": tasks, "time": launcher.get("timeout_min")}
    request["mem"] = f"{launcher.mem_gb}G" if launcher.get("mem_gb") else None
    flags = [f"--{key}={value}" for key, value in request.items() if value is not None]
    try:
        test = ["sbatch", "--test-only", *flags, "--wrap=true"]
        result = subprocess.run(test, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return f"SLURM does not answer ({err}). Is slurmctld running?"
    if result.returncode == 0:
        return None
    why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no reason given"
    return (
        f"SLURM refuses the jobs of this sweep ({why.removeprefix('sbatch: error: ')}), asked "
        f"as: {' '.join(flags)}. Pick another hydra.launcher.partition, or ask for less: "
        "hydra.launcher.cpus_per_task, hydra.launcher.mem_per_cpu (or mem_gb), "
        "trainer.devices, or GPUs only with trainer=gpu / trainer=ddp."
    )


class SqueueWatcher(SlurmInfoWatcher):
    """submitit's job watcher reading this user's jobs from squeue instead of sacct, which a
    cluster without accounting lacks. A job squeue no longer lists has ENDED; a job is done
    when SLURM will no longer run it (submitit's own list of running states lacks CONFIGURING,
    SUSPENDED, REQUEUE_HOLD and others)."""

    INCOMPLETE = frozenset({
        "READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED",
        "CONFIGURING", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "SIGNALING",
        "STAGE_OUT",
    })  # fmt: skip

    def _make_command(self) -> list[str] | None:
        if not self._registered - self._finished:
            return None
        user = getpass.getuser()
        return ["squeue", "--array", "--noheader", "--states=all", "--format=%i|%T|%N", "-u", user]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        info = super().read_info("JobID|State|NodeList\n" + text)
        for job_id in self._registered - self._finished - set(info):
            info[job_id] = {"JobID": job_id, "State": "ENDED", "NodeList": ""}
        return info

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode=mode).upper() not in self.INCOMPLETE
