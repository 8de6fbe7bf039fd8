"""Continue an interrupted run in its own directory: `python -m src.train resume=DIR`.

`resume=DIR` re-runs DIR's recorded command-line overrides (from `.hydra/overrides.yaml`)
with `hydra.run.dir=DIR ckpt_path=last`; any override given next to it wins, so
`resume=DIR trainer.max_epochs=40` extends a finished run. `ckpt_path=last` continues from
the directory's `last.ckpt` when there is one; a run that already finished its epochs is
not trained again. (A multirun directory is continued the same way, job by job:
`src.runs.sweep`.)
"""

import csv
import logging
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from src.errors import UserError
from src.runs.run_dir import multirun_dir, override_key
from src.runs.summary import RunSummary

log = logging.getLogger(__name__)

# Overrides that name the run itself rather than what it trains.
RUN_KEYS = {"hydra.run.dir", "ckpt_path", "resume"}


def resume_overrides(args: list[str]) -> list[str]:
    """Expand `resume=DIR` in a command line into the overrides that continue DIR."""
    given = [a for a in args if a.startswith("resume=")]
    if not given:
        return args
    run_dir = Path(given[-1].split("=", 1)[1]).expanduser()
    if (run_dir / "multirun.yaml").is_file():
        from src.runs.sweep import sweep_resume_overrides

        return sweep_resume_overrides(run_dir, args)
    recorded = run_dir / ".hydra" / "overrides.yaml"
    if not recorded.is_file():
        raise UserError(
            f"resume={run_dir}: no run to continue there (expected {recorded}, or "
            f"{run_dir / 'multirun.yaml'} for a multirun). Pass the directory of an earlier "
            "run, e.g. logs/runs/<date_time>, or of a multirun, e.g. logs/multiruns/<date_time>."
        )
    new_keys = {override_key(a) for a in args if "=" in a}
    old = [
        o
        for o in OmegaConf.to_container(OmegaConf.load(recorded))
        if override_key(o) not in new_keys | RUN_KEYS
    ]
    ckpt = [] if "ckpt_path" in new_keys else ["ckpt_path=last"]
    return [*old, *args, f"hydra.run.dir={run_dir}", *ckpt]


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> Path | None:
    """The checkpoint file to continue from. `last`: this run directory's last.ckpt, or None
    (train from the start) when the run has none yet, as Lightning's own `ckpt_path="last"`."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) != "last":
        return Path(ckpt_path).expanduser()
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    log.info("ckpt_path=last: %s has no checkpoints/last.ckpt yet; training from the start.",
             output_dir)  # fmt: skip
    return None


def finished_run(output_dir: Path, cfg) -> RunSummary | None:
    """The summary of the run in `output_dir` when it already trained its epochs to the end
    with this config (continuing it has nothing left to do), else None.

    A finished run of another config is refused: its results would pass for this config's;
    so is any earlier attempt of a multirun job with another config (the sweep's arguments
    changed), which would mix two jobs in one directory. A single run may be continued with
    changed keys (`resume=DIR optimizer.lr=...`).
    """
    summary = RunSummary.read(output_dir)
    epochs = cfg.trainer.max_epochs
    finished = summary is not None and not summary.interrupted
    # Trained its epochs, or stopped early by itself (not: extended with more epochs).
    finished = finished and (summary.epochs_trained == epochs or summary.stopped_early)
    if (finished or in_multirun()) and (output_dir / "config.yaml").is_file():
        before = OmegaConf.to_container(OmegaConf.load(output_dir / "config.yaml"))
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
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def config_changes(before: dict, now: dict, prefix: str = "") -> list[str]:
    """`key: old before, new now` for every value that differs, except the keys that name
    where and how a run is started (ckpt_path, resume, paths.output_dir)."""
    changes = []
    for key in sorted(set(before) | set(now)):
        name = f"{prefix}{key}"
        if name in ("ckpt_path", "resume", "paths.output_dir"):
            continue
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{name}.")
        elif old != new:
            changes.append(f"{name}: {old!r} before, {new!r} now")
    return changes


def continue_from(ckpt_path: Path, model, loggers: list) -> None:
    """Check that the checkpoint fits `model` (its backbone, classes and shapes), then keep the
    metrics of the epochs it has trained, and only those, in the loggers' files.

    Lightning's CSV logger deletes an existing metrics.csv when it starts; rows written after
    the checkpoint (an epoch the kill cut short) are dropped, as that epoch runs again.
    TensorBoard gets `purge_step`: its readers hide the earlier events from that step on.
    (MLflow continues its run itself, see src/training/mlflow_logger.py.)
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from src.models.checkpoint import load_checkpoint, require_same_shapes

    checkpoint = load_checkpoint(ckpt_path, model.hparams.num_classes, model.hparams.backbone)
    require_same_shapes(model, checkpoint, ckpt_path)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            # The logger passes its keyword arguments on to the SummaryWriter it creates on
            # first use, which writes the purge marker; a writer re-opened after training
            # (for the figures) must not purge the resumed epochs again.
            logger._kwargs["purge_step"] = checkpoint["global_step"]
            logger.experiment  # noqa: B018
            del logger._kwargs["purge_step"]
        path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if path is None or not path.is_file():
            continue
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = [r for r in reader if trained_before(r, checkpoint)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Previous log files ... will be deleted"
            writer = logger.experiment  # creating it deletes metrics.csv
        with open(path, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=header)
            out.writeheader()
            out.writerows(rows)
        writer.metrics_keys = header  # later rows append under the same columns


def trained_before(row: dict, checkpoint: dict) -> bool:
    """Epoch rows up to the checkpoint's epoch; epoch-less rows (lr) before its step."""
    if row.get("epoch"):
        return int(row["epoch"]) <= checkpoint["epoch"]
    return int(row["step"]) < checkpoint["global_step"]


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
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    where = f"-m resume={multirun_dir(hydra_cfg)}" if multirun else f"resume={output_dir}"
    message = (
        f"Interrupted by {summary.interrupted_by} after {summary.epochs_trained} finished "
        f"epoch(s); continue with: python -m src.train {where}"
    )
    log.warning("%s", message)
    code = 143 if summary.interrupted_by == "SIGTERM" else 130
    if multirun:
        raise RunInterrupted(message, code)
    raise SystemExit(code)
