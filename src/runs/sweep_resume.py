"""Continue a multirun that stopped half-way, in its own directory.

`python -m src.train -m resume=<sweep dir>` re-runs the sweep's recorded arguments (from
`multirun.yaml`) with `hydra.sweep.dir=<sweep dir>`; re-running the sweep's command with
`hydra.sweep.dir=<sweep dir>` does the same. Each job then finds the directory of its earlier
attempt (`<sweep dir>/<job number>`) and, inside the job, so with every launcher:

- completed (its summary.json says it finished, and it did not fail): skipped, returning the
  recorded value of `optimized_metric` to the sweeper;
- unfinished with a `checkpoints/last.ckpt` (killed, interrupted, requeued by SLURM): continues
  from it, as `resume=DIR` continues a single run;
- never started, or stopped before its first checkpoint: trains from the start.

A job whose directory holds a run of another config (the sweep's arguments changed) is refused,
so that results of two different jobs never mix in one directory.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.errors import UserError
from src.files import write_text_atomic
from src.runs.run_dir import Run, multirun_dir, override_key
from src.runs.summary import RunSummary

log = logging.getLogger(__name__)

# Keys that name how a run is started, not what it trains: they may differ between attempts.
# paths.output_dir: the same job directory, wherever the sweep was moved to.
ATTEMPT_KEYS = {"ckpt_path", "resume", "paths.output_dir"}
SWEEP_FILE = "multirun.yaml"


class SweepRecord(Callback):
    """Writes the sweep's config, with its command-line arguments, to `<sweep dir>/multirun.yaml`
    before the first job: Hydra's basic sweeper does so itself, the Optuna sweeper does not,
    and `resume=<sweep dir>` reads the arguments from there."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        write_text_atomic(multirun_dir(config.hydra) / SWEEP_FILE, OmegaConf.to_yaml(config))


def sweep_resume_overrides(sweep_dir: Path, args: list[str]) -> list[str]:
    """The command line that continues the multirun in `sweep_dir`: its recorded arguments,
    those in `args` replacing them key by key, and `hydra.sweep.dir=<sweep_dir>`."""
    # As written: an override such as `key=${hydra:job.num}` is resolved in each job, not here.
    recorded = OmegaConf.to_container(OmegaConf.load(sweep_dir / SWEEP_FILE).hydra.overrides)
    given = [a for a in args if not a.startswith("resume=") and a not in ("-m", "--multirun")]
    new_keys = {override_key(a) for a in given if "=" in a}
    skip = new_keys | {"hydra.sweep.dir", "hydra.mode", "resume"}
    old = [o for o in [*recorded["hydra"], *recorded["task"]] if override_key(o) not in skip]
    return ["--multirun", *old, *given, f"hydra.sweep.dir={sweep_dir}"]


def is_sweep_dir(path: Path) -> bool:
    return (path / SWEEP_FILE).is_file()


def completed_earlier(run: Run) -> bool:
    """Whether an earlier attempt of this sweep job finished: summary.json written at the end
    of training, not interrupted, and the job did not fail afterwards."""
    summary, status = run.summary, run.status
    finished = summary is not None and not summary.interrupted
    return finished and (status is None or status.get("status") != "failed")


@dataclass
class EarlierAttempt:
    """What a sweep job finds in its directory when it starts."""

    run: Run

    @property
    def completed(self) -> bool:
        return completed_earlier(self.run)

    @property
    def last_ckpt(self) -> Path | None:
        path = self.run.path / "checkpoints" / "last.ckpt"
        return path if path.is_file() else None


def earlier_attempt(cfg: DictConfig, job_dir: Path) -> EarlierAttempt | None:
    """The earlier attempt of this job in `job_dir`, if there is one to skip or continue.

    Raises a `UserError` when `job_dir` holds a run of a different config."""
    run = Run(job_dir, check=False)
    attempt = EarlierAttempt(run)
    if not run.config:  # never got as far as its config: nothing to keep
        return None
    changed = config_changes(run.config, OmegaConf.to_container(cfg, resolve=True))
    if changed and (attempt.completed or attempt.last_ckpt):
        raise UserError(
            f"{job_dir} holds an earlier run of another config ({'; '.join(changed[:3])}), "
            "so this job cannot continue it. Resume a sweep with the arguments it was started "
            "with (python -m src.train -m resume=<sweep dir> reads them from multirun.yaml), "
            "or start the changed sweep in a new hydra.sweep.dir."
        )
    return attempt if attempt.completed or attempt.last_ckpt else None


def config_changes(before: dict, now: dict, prefix: str = "") -> list[str]:
    """`key: old before, new now` for every value that differs, except the ATTEMPT_KEYS."""
    changes = []
    for key in sorted(set(before) | set(now)):
        name = f"{prefix}{key}"
        if name in ATTEMPT_KEYS:
            continue
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{name}.")
        elif old != new:
            changes.append(f"{name}: {old!r} before, {new!r} now")
    return changes


def start_sweep_job(cfg: DictConfig, job_dir: Path) -> tuple[RunSummary | None, list[str]]:
    """Decide how this sweep job starts from what its directory holds.

    Returns (summary, overrides). A summary: the job completed in an earlier attempt and must
    not train again. The overrides (`ckpt_path=last` when it continues from its last.ckpt) are
    also set in `cfg`; processes that DDP starts for this job need them on their command line.
    """
    attempt = earlier_attempt(cfg, job_dir)
    if attempt is None:
        return None, []
    if attempt.completed:
        summary = attempt.run.summary
        log.info(
            "Job %s completed in an earlier run of this sweep (best val/acc %s): skipped. "
            "Its directory: %s",
            job_dir.name, summary.best_val_acc, job_dir,
        )  # fmt: skip
        return summary, []
    log.info("Job %s continues from %s, where an earlier attempt stopped.", job_dir.name,
             attempt.last_ckpt)  # fmt: skip
    cfg.ckpt_path = "last"
    return None, ["ckpt_path=last"]
