"""Sweeps on a SLURM cluster (`hydra/launcher=slurm`, the submitit launcher): the checks before
anything is submitted, and what a failed job reports.

`SlurmChecks` is a Hydra callback that acts only when the launcher is SLURM. Before the first
job, it stops the sweep with one message (exit code 2) when `sbatch` is missing, the partition
does not exist, or the request cannot fit the partition's nodes (such a job would wait in the
queue forever). On a cluster without accounting (no `sacct`, like the one `.ci/slurm_cluster.sh`
starts), submitit cannot learn that a job ended without a result and would wait for it
forever; there the jobs are watched with `squeue` instead. A job that fails reports its cause
together with the paths of its logs.
"""

import getpass
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from submitit import JobEnvironment
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

log = logging.getLogger(__name__)

GPU_ACCELERATORS = ("gpu", "cuda")


def if_gpu(accelerator: Any, then: Any, otherwise: Any) -> Any:
    """`${if_gpu:${trainer.accelerator},A,B}` in a config: A when the trainer trains on GPUs
    (accelerator gpu or cuda), else B. `auto` counts as no GPU: a job asks for GPUs only when
    the trainer is told to use them (trainer=gpu, trainer=ddp)."""
    return then if str(accelerator).lower() in GPU_ACCELERATORS else otherwise


OmegaConf.register_new_resolver("if_gpu", if_gpu, replace=True)


def in_slurm_job() -> bool:
    """Whether this process is a task of a job that the submitit launcher submitted."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in os.environ


def slurm_task_rank() -> int:
    """This task's rank among the job's tasks (0 outside SLURM)."""
    return int(os.environ.get("SLURM_PROCID", "0")) if in_slurm_job() else 0


class JobInterrupted(RuntimeError):
    """A SLURM job stopped by a signal after which SLURM will not run it again."""


class SlurmJobFailed(CompactHydraException):
    """A sweep job that failed on the cluster; Hydra prints only this message."""


class SlurmChecks(Callback):
    """Checks a SLURM sweep before submitting it; names the logs of a job that failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        if not str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
            return
        problem = submission_problem(launcher)
        if problem:
            log.error("%s", problem)
            raise SystemExit(2)
        if not has_accounting():
            watch_jobs_with_squeue()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED or not in_slurm_job() or slurm_task_rank():
            return
        error = job_return._return_value  # `.return_value` would raise it
        job = config.hydra.job
        ended = "was stopped" if isinstance(error, JobInterrupted) else "failed"
        message = (
            f"Job {job.num} of the sweep ({' '.join(config.hydra.overrides.task)}) {ended} "
            f"in SLURM job {job.id}: {type(error).__name__}: {error}\n"
            f"Its logs: {submitit_log('out')}, {submitit_log('err')} and "
            f"{Path(config.hydra.runtime.output_dir) / 'train.log'}"
        )
        # The sweeper re-raises this in the submitting process, where Hydra prints the
        # message of a CompactHydraException without a traceback.
        failed = SlurmJobFailed(message)
        failed.__cause__ = error
        job_return._return_value = failed


def submitit_log(kind: str) -> Path:
    """This task's stdout ("out") or stderr ("err") file, as submitit names it."""
    paths = JobEnvironment().paths
    return paths.stdout if kind == "out" else paths.stderr


def submission_problem(launcher: DictConfig) -> str | None:
    """Why sbatch would refuse this sweep's jobs or SLURM could never start them, or None."""
    if shutil.which("sbatch") is None:
        return (
            "hydra/launcher=slurm submits every job with sbatch, which is not on this "
            "machine's PATH. Run the sweep where SLURM's commands are (a login node), or here "
            "with a local launcher: drop hydra/launcher=slurm, or use hydra/launcher=joblib."
        )
    try:
        nodes = partition_nodes(launcher.get("partition"))
    except subprocess.CalledProcessError as err:
        return f"SLURM does not answer: sinfo says {err.stderr.strip()!r}. Is slurmctld running?"
    except (OSError, subprocess.SubprocessError) as err:
        return f"SLURM does not answer (sinfo: {err}). Is slurmctld running?"
    if not nodes:
        return (
            f"hydra.launcher.partition={launcher.get('partition')}: no such partition on this "
            f"cluster. Its partitions: {', '.join(sorted(partition_nodes(None))) or 'none'} "
            "(the one marked * is the default, used when partition is null)."
        )
    return request_problem(launcher, nodes)


def partition_nodes(partition: str | None) -> dict[str, list[dict]]:
    """{partition: [{cpus, mem_mb, gpus}, ...]} of the partition's node kinds (all
    partitions for None, marked '*' for the default one), from sinfo."""
    command = ["sinfo", "--noheader", "--format=%P|%c|%m|%G"]
    if partition:
        command.append(f"--partition={partition}")
    out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
    nodes: dict[str, list[dict]] = {}
    for line in out.splitlines():
        name, cpus, mem, gres = line.split("|")
        gpus = sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        node = {"cpus": int(cpus.rstrip("+")), "mem_mb": int(mem.rstrip("+")), "gpus": gpus}
        nodes.setdefault(name, []).append(node)
    return nodes


def request_problem(launcher: DictConfig, nodes: dict[str, list[dict]]) -> str | None:
    """Why no node of the partition could ever run one of these jobs, or None."""
    tasks, cpus = launcher.tasks_per_node, launcher.get("cpus_per_task") or 1
    gpus = launcher.get("gpus_per_node") or 0
    if not isinstance(tasks, int) or tasks < 1:
        return (
            f"hydra.launcher.tasks_per_node={tasks!r}: SLURM starts one task per device, so "
            "give trainer.devices as a number (not auto or -1) for a SLURM sweep."
        )
    if launcher.get("mem_gb") and launcher.get("mem_per_cpu"):
        return (
            "hydra.launcher.mem_gb and hydra.launcher.mem_per_cpu are both set; sbatch takes "
            "one of them. Set the other to null."
        )
    mem_mb = memory_mb(launcher, tasks * cpus)
    if launcher.get("partition"):  # one or a comma-separated list: any of them will do
        name, kinds = launcher.partition, [kind for ks in nodes.values() for kind in ks]
    else:  # SLURM uses its default partition, which sinfo marks with '*'
        name = next((n for n in nodes if n.endswith("*")), next(iter(nodes)))
        kinds = nodes[name]
    need = {"cpus": tasks * cpus, "mem_mb": mem_mb, "gpus": gpus}
    if any(all(node[k] >= v for k, v in need.items()) for node in kinds):
        return None
    largest = max(kinds, key=lambda n: (n["gpus"], n["cpus"], n["mem_mb"]))
    return (
        f"Each job asks one node with {tasks} task(s) x {cpus} CPU(s)"
        + (f", {mem_mb} MB of memory" if mem_mb else "")
        + (f" and {gpus} GPU(s)" if gpus else "")
        + f", but the largest node of partition {name} has {largest['cpus']} CPUs, "
        f"{largest['mem_mb']} MB and {largest['gpus']} GPUs, so the jobs would wait forever. "
        "Lower hydra.launcher.cpus_per_task or hydra.launcher.mem_per_cpu, use fewer "
        "trainer.devices, or pick another hydra.launcher.partition."
        + (" GPUs are asked because trainer.accelerator is gpu." if gpus else "")
    )


def memory_mb(launcher: DictConfig, cpus: int) -> int:
    """The memory a job asks per node, in MB (0 when it asks for none)."""
    if launcher.get("mem_gb"):
        return int(launcher.mem_gb * 1024)
    per_cpu = launcher.get("mem_per_cpu")
    if not per_cpu:
        return 0
    number, unit = re.fullmatch(r"(\d+)([KMGT]?)B?", str(per_cpu).upper()).groups()
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[unit]
    return int(int(number) * scale * cpus)


def has_accounting() -> bool:
    """Whether this cluster keeps job accounting, which submitit's sacct calls need."""
    try:
        config = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return True  # cannot tell: leave submitit as it is
    return "accounting_storage/none" not in config


def watch_jobs_with_squeue() -> None:
    """Make submitit ask squeue, not sacct, whether this sweep's jobs are still running."""
    if not isinstance(SlurmJob.watcher, SqueueWatcher):
        SlurmJob.watcher = SqueueWatcher(delay_s=60)


class SqueueWatcher(SlurmInfoWatcher):
    """submitit's job watcher, reading this user's jobs from squeue.

    squeue forgets a job some minutes after it ended (MinJobAge); a job it no longer lists
    has ended, so its state becomes ENDED and submitit looks for its result.

    submitit counts a job as done when its state is not in its own short list of running
    states, which lacks CONFIGURING (a node still booting), SUSPENDED, REQUEUE_HOLD and
    others: it would give up on such a job as if it had ended. `is_done` uses SLURM's full
    list instead.
    """

    # States from which SLURM still runs the job (submitit's own list, and the rest).
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
