"""Continue an interrupted run or multirun in its own directory: `python -m src.train [-m]
resume=DIR` re-runs DIR's recorded overrides (those given beside it win) with `ckpt_path=last`."""

import csv
import logging
import warnings
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.logger import _flatten_dict
from omegaconf import OmegaConf

from src.errors import UserError
from src.runs.run_dir import SWEEP_FILE, multirun_dir, override_key, read_yaml
from src.runs.summary import RunSummary

log = logging.getLogger(__name__)

# Overrides that name the run itself rather than what it trains.
RUN_KEYS = {"hydra.run.dir", "ckpt_path", "resume"}


def resume_overrides(args: list[str]) -> list[str]:
    """Expand `resume=DIR` in a command line into the overrides that continue DIR, a run or a
    multirun: its recorded overrides without the keys `args` set, then `args`, where it runs
    and `ckpt_path=last` (unless `args` name a checkpoint)."""
    given = [a for a in args if a.startswith("resume=")]
    if not given:
        return args
    run_dir = Path(given[-1].split("=", 1)[1]).expanduser()
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    skip, where, multirun = RUN_KEYS, f"hydra.run.dir={run_dir}", []
    if (run_dir / SWEEP_FILE).is_file():  # each job continues from its own last.ckpt
        # As written: an override such as `key=${hydra:job.num}` is resolved in each job.
        recorded = read_yaml(run_dir / SWEEP_FILE)["hydra"]["overrides"]
        recorded = [*recorded["hydra"], *recorded["task"]]
        args = [a for a in args if a not in given and a not in ("-m", "--multirun")]
        skip = {"hydra.sweep.dir", "hydra.mode", "resume", "ckpt_path"}
        where, multirun = f"hydra.sweep.dir={run_dir}", ["--multirun"]
    elif (recorded := read_yaml(overrides_file)) is None:
        raise UserError(
            f"resume={run_dir}: no run to continue there (expected {overrides_file}, or "
            f"{run_dir / SWEEP_FILE} for a multirun). Pass the directory of an earlier "
            "run, e.g. logs/runs/<date_time>, or of a multirun, e.g. logs/multiruns/<date_time>."
        )
    new_keys = {override_key(a) for a in args if "=" in a}
    old = [o for o in recorded if override_key(o) not in new_keys | skip]
    last = [] if "ckpt_path" in new_keys else ["ckpt_path=last"]
    return [*multirun, *old, *args, where, *last]


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> Path | None:
    """The checkpoint file to continue from. `last`: this run directory's last.ckpt, or None
    (train from the start) when the run has none yet, as Lightning's own `ckpt_path="last"`."""
    if ckpt_path is None or str(ckpt_path) != "last":
        return None if ckpt_path is None else Path(ckpt_path).expanduser()
    if (last := output_dir / "checkpoints" / "last.ckpt").is_file():
        return last
    log.info("ckpt_path=last: no %s yet; training from the start.", last)
    return None


def finished_run(output_dir: Path, cfg) -> RunSummary | None:
    """The summary of the run in `output_dir` when it already trained its epochs with this
    config (nothing left to do), else None. A finished run of another config is refused, and so
    is any earlier attempt of a multirun job with another config; a single run may be continued
    with changed keys."""
    summary = RunSummary.read(output_dir)
    done = summary is not None and not summary.interrupted
    # Trained its epochs, or stopped early by itself (not: extended with more epochs).
    finished = done and (summary.epochs_trained == cfg.trainer.max_epochs or summary.stopped_early)
    if (finished or in_multirun()) and (before := read_yaml(output_dir / "config.yaml")):
        changed = config_changes(before, OmegaConf.to_container(cfg, resolve=True))
        if changed:
            raise UserError(
                f"{output_dir} holds {'a finished' if finished else 'an earlier'} run of another "
                f"config ({'; '.join(changed[:3])}). Continue it with the config it had, or train "
                "in a new directory (another hydra.run.dir, or hydra.sweep.dir for a multirun)."
            )
    if finished:
        log.info("%s finished training before; its results stand.", output_dir)
    return summary if finished else None


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def config_changes(before: dict, now: dict) -> list[str]:
    """`key: old before, new now` for every value that differs, except the keys that name
    where and how a run is started (ckpt_path, resume, paths.output_dir)."""
    old, new = _flatten_dict(before, "."), _flatten_dict(now, ".")
    keys = (old.keys() | new.keys()) - {"ckpt_path", "resume", "paths.output_dir"}
    changed = sorted(k for k in keys if old.get(k) != new.get(k))
    return [f"{k}: {old.get(k)!r} before, {new.get(k)!r} now" for k in changed]


def continue_from(ckpt_path: Path, model, loggers: list) -> None:
    """Check that the checkpoint fits `model`, then keep the metrics of the epochs it has
    trained, and only those, in the CSV and TensorBoard files (MLflow: `MLflowLogger`)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from src.models.checkpoint import load_checkpoint, require_same_shapes

    checkpoint = load_checkpoint(ckpt_path, model.hparams.num_classes, model.hparams.backbone)
    require_same_shapes(model, checkpoint, ckpt_path)
    epoch, step = checkpoint["epoch"], checkpoint["global_step"]
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            # The SummaryWriter made on first use gets the logger's kwargs and writes the purge
            # marker (readers hide later events); one re-opened for the figures must not.
            logger._kwargs["purge_step"] = step
            logger.experiment  # noqa: B018
            del logger._kwargs["purge_step"]
        path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if path is None or not path.is_file():
            continue
        with open(path, newline="") as f:
            lines = f.readlines()
        reader = csv.DictReader(lines)
        # Epoch rows up to the checkpoint's epoch; epoch-less rows (lr) before its step.
        kept = [
            line
            for line, row in zip(lines[1:], reader, strict=True)
            if (int(row["epoch"]) <= epoch if row.get("epoch") else int(row["step"]) < step)
        ]
        with warnings.catch_warnings():  # "Previous log files ... will be deleted"
            warnings.simplefilter("ignore")
            writer = logger.experiment  # creating it deletes metrics.csv: write back the rows
        with open(path, "w", newline="") as f:
            f.writelines(lines[:1] + kept)
        writer.metrics_keys = reader.fieldnames or []  # later rows append under the same columns


class RunInterrupted(Exception):
    """A job of a multirun that was interrupted: the launcher records it as not done (a local
    multirun then stops, see `src.runs.sweep`; SLURM may start the job again)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def stop_interrupted(summary: RunSummary, output_dir) -> None:
    """Say how to continue an interrupted run, then end it without a result: a single run
    exits as a shell reports a process stopped by that signal (128 + its number); a job of a
    multirun raises `RunInterrupted`."""
    multirun = in_multirun()
    where = f"-m resume={multirun_dir(HydraConfig.get())}" if multirun else f"resume={output_dir}"
    message = (
        f"Interrupted by {summary.interrupted_by} after {summary.epochs_trained} finished "
        f"epoch(s); continue with: python -m src.train {where}"
    )
    log.warning("%s", message)
    code = 143 if summary.interrupted_by == "SIGTERM" else 130
    if multirun:
        raise RunInterrupted(message, code)
    raise SystemExit(code)
