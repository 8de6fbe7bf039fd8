"""What a multirun (`python -m src.train -m ...`) adds to its jobs, as Hydra callbacks that
`conf/hydra/default.yaml` attaches; they do nothing in a single run.

- `SweepSummary`: `sweep_summary.csv` / `.md` at the sweep root after every job
  (`src.runs.sweep_summary`), and each job's `job_status.json`.
- `SweepRecord`: the sweep's config and arguments in `<sweep dir>/multirun.yaml` (the Optuna
  sweeper does not write it), which `resume=<sweep dir>` replays.
- `JobCommandLine`: while a job runs, the command line and `hydra.run.dir` are the job's own,
  so that processes DDP starts for it re-run that job, not the whole sweep.

Continuing a multirun that stopped half-way, `python -m src.train -m resume=<sweep dir>`,
re-runs its recorded arguments in the same directory with `ckpt_path=last`: each job
continues from its `last.ckpt`, a finished job keeps its results, one never started trains
(`src.runs.resume`).
"""

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write

from src.files import write_text_atomic
from src.runs.resume import RunInterrupted
from src.runs.run_dir import STATUS_FILE, multirun_dir, override_key

log = logging.getLogger(__name__)

SWEEP_FILE = "multirun.yaml"


def reports(config: DictConfig) -> bool:
    """Whether this process reports the job: in a multirun, and not one of the extra tasks
    of a multi-task SLURM job (task 0 trains the same job and reports it)."""
    return config.hydra.mode == RunMode.MULTIRUN and os.environ.get("SLURM_PROCID", "0") == "0"


class SweepSummary(Callback):
    """Writes the sweep summary when each job starts (a sweep killed then shows it as
    unfinished) and ends, and once more at the end of the sweep."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if reports(config):
            from src.runs.sweep_summary import write_sweep_summary

            self._started[config.hydra.runtime.output_dir] = time.perf_counter()
            write_sweep_summary(multirun_dir(config.hydra))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not reports(config):
            return
        from src.runs.sweep_summary import one_line, write_sweep_summary

        job_dir = Path(config.hydra.runtime.output_dir)
        started = self._started.pop(str(job_dir), None)
        failed = job_return.status != JobStatus.COMPLETED
        value = job_return._return_value  # `.return_value` would re-raise a failed job's error
        if isinstance(value, RunInterrupted):  # unfinished: it can continue
            write_sweep_summary(multirun_dir(config.hydra))
            if "SLURM_JOB_ID" not in os.environ:  # Ctrl-C or kill: stop the whole sweep
                raise SystemExit(value.exit_code)
            return
        status = {
            "status": "failed" if failed else "completed",
            "error": one_line(value) if failed else None,
            "return_value": value if isinstance(value, int | float) else None,
            "wall_time_s": None if started is None else round(time.perf_counter() - started, 2),
        }
        write_text_atomic(job_dir / STATUS_FILE, json.dumps(status, indent=2) + "\n")
        write_sweep_summary(multirun_dir(config.hydra))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = multirun_dir(config.hydra)
        if root.is_dir():
            from src.runs.sweep_summary import write_sweep_summary

            rows = write_sweep_summary(root)
            log.info("Sweep summary of %d jobs: %s", len(rows), root / "sweep_summary.md")


class SweepRecord(Callback):
    """Writes the sweep's config, with its command-line arguments, to `multirun.yaml` before
    the first job (Hydra's basic sweeper does so itself, the Optuna sweeper does not)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        write_text_atomic(multirun_dir(config.hydra) / SWEEP_FILE, OmegaConf.to_yaml(config))


class JobCommandLine(Callback):
    """While a job of a multirun runs, `sys.argv` holds that job's overrides and Hydra's
    `run.dir` its directory.

    Lightning's DDP starts ranks 1..n-1 by re-running `sys.argv` with `hydra.run.dir=<run.dir>`
    appended. In a multirun, `sys.argv` holds `-m` and the whole sweep (`lr=0.01,0.001`), and
    `run.dir` is not the job's directory: every job would start another full sweep.
    """

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        self._saved = sys.argv, hydra_cfg.run.dir
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
        with read_write(hydra_cfg.run):
            hydra_cfg.run.dir = hydra_cfg.runtime.output_dir

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        sys.argv, run_dir = self._saved
        with read_write(hydra_cfg.run):
            hydra_cfg.run.dir = run_dir


def sweep_resume_overrides(sweep_dir: Path, args: list[str]) -> list[str]:
    """The command line that continues the multirun in `sweep_dir`: its recorded arguments,
    those in `args` replacing them key by key, `hydra.sweep.dir=<sweep_dir>` and
    `ckpt_path=last`."""
    # As written: an override such as `key=${hydra:job.num}` is resolved in each job, not here.
    recorded = OmegaConf.to_container(OmegaConf.load(sweep_dir / SWEEP_FILE).hydra.overrides)
    given = [a for a in args if not a.startswith("resume=") and a not in ("-m", "--multirun")]
    new_keys = {override_key(a) for a in given if "=" in a}
    skip = new_keys | {"hydra.sweep.dir", "hydra.mode", "resume", "ckpt_path"}
    old = [o for o in [*recorded["hydra"], *recorded["task"]] if override_key(o) not in skip]
    ckpt = [] if "ckpt_path" in new_keys else ["ckpt_path=last"]
    return ["--multirun", *old, *given, f"hydra.sweep.dir={sweep_dir}", *ckpt]
