"""What a multirun adds to its jobs, as Hydra callbacks that `conf/hydra/default.yaml` attaches
(they do nothing in a single run)."""

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write

from src.files import write_text_atomic
from src.runs.resume import RunInterrupted
from src.runs.run_dir import STATUS_FILE, SWEEP_FILE, multirun_dir
from src.runs.sweep_summary import write_sweep_summary

log = logging.getLogger(__name__)


def reports(config: DictConfig) -> bool:
    """Whether this process reports the job: in a multirun, and not one of the extra tasks
    of a multi-task SLURM job (task 0 trains the same job and reports it)."""
    return config.hydra.mode == RunMode.MULTIRUN and os.environ.get("SLURM_PROCID", "0") == "0"


def one_line(error: BaseException) -> str:
    """The root cause (Hydra wraps errors raised while instantiating a `_target_`), in a line."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"


class SweepSummary(Callback):
    """Writes each job's `job_status.json` when it ends, and the sweep summary when each job
    starts (a sweep killed then shows it as unfinished) and ends, and at the end."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if reports(config):
            self._started[config.hydra.runtime.output_dir] = time.perf_counter()
            write_sweep_summary(multirun_dir(config.hydra))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not reports(config):
            return
        started = self._started.pop(config.hydra.runtime.output_dir, None)
        failed = job_return.status != JobStatus.COMPLETED
        value = job_return._return_value  # `.return_value` would re-raise a failed job's error
        if not isinstance(value, RunInterrupted):  # an interrupted job has no status: it continues
            status = {
                "status": "failed" if failed else "completed",
                "error": one_line(value) if failed else None,
                "return_value": value if isinstance(value, int | float) else None,
                "wall_time_s": None if started is None else round(time.perf_counter() - started, 2),
            }
            job_dir = Path(config.hydra.runtime.output_dir)
            write_text_atomic(job_dir / STATUS_FILE, json.dumps(status, indent=2) + "\n")
        write_sweep_summary(multirun_dir(config.hydra))
        if isinstance(value, RunInterrupted) and "SLURM_JOB_ID" not in os.environ:
            raise SystemExit(value.exit_code)  # Ctrl-C or kill: stop the whole sweep

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = multirun_dir(config.hydra)
        if root.is_dir():
            rows = write_sweep_summary(root)
            log.info("Sweep summary of %d jobs: %s", len(rows), root / "sweep_summary.md")


class SweepRecord(Callback):
    """Writes the sweep's config, with its command-line arguments, to `multirun.yaml` before
    the first job (Hydra's basic sweeper does so itself, the Optuna sweeper does not)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        write_text_atomic(multirun_dir(config.hydra) / SWEEP_FILE, OmegaConf.to_yaml(config))


class JobCommandLine(Callback):
    """While a job of a multirun runs, `sys.argv` holds that job's overrides and Hydra's
    `run.dir` its directory: Lightning's DDP starts ranks 1..n-1 by re-running `sys.argv` with
    `hydra.run.dir=<run.dir>`, which would otherwise start the whole sweep again."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            hydra_cfg = HydraConfig.get()
            self._saved = sys.argv, hydra_cfg.run.dir
            self._set([sys.argv[0], *hydra_cfg.overrides.task], hydra_cfg.runtime.output_dir)

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            self._set(*self._saved)

    @staticmethod
    def _set(argv: list[str], run_dir: str) -> None:
        sys.argv, hydra_cfg = argv, HydraConfig.get()
        with read_write(hydra_cfg.run):
            hydra_cfg.run.dir = run_dir
