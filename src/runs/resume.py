"""Continue an interrupted run in its own directory: `python -m src.train resume=DIR`.

(DIR may also be a sweep directory: see src/runs/sweep_resume.py.)

`resume=DIR` re-runs DIR's recorded command-line overrides (from `.hydra/overrides.yaml`)
with `hydra.run.dir=DIR ckpt_path=last`; any override given next to it wins, so
`resume=DIR trainer.max_epochs=40` extends a finished run.
"""

import csv
import sys
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from src.errors import UserError
from src.runs.run_dir import override_key
from src.runs.sweep_resume import SWEEP_FILE, is_sweep_dir, sweep_resume_overrides

# Overrides that name the run itself rather than what it trains.
RUN_KEYS = {"hydra.run.dir", "ckpt_path", "resume"}


def resume_overrides(args: list[str]) -> list[str]:
    """Expand `resume=DIR` in a command line into the overrides that continue DIR."""
    given = [a for a in args if a.startswith("resume=")]
    if not given:
        return args
    run_dir = Path(given[-1].split("=", 1)[1]).expanduser()
    if is_sweep_dir(run_dir):
        return sweep_resume_overrides(run_dir, args)
    recorded = run_dir / ".hydra" / "overrides.yaml"
    if not recorded.is_file():
        raise UserError(
            f"resume={run_dir}: no run to continue there (expected {recorded}, or "
            f"{run_dir / SWEEP_FILE} for a sweep). Pass the directory of an earlier run, e.g. "
            "logs/runs/<date_time>, or of a sweep, e.g. logs/multiruns/<date_time>."
        )
    new_keys = {override_key(a) for a in args if "=" in a}
    old = [
        o
        for o in OmegaConf.to_container(OmegaConf.load(recorded))
        if override_key(o) not in new_keys | RUN_KEYS
    ]
    ckpt = [] if "ckpt_path" in new_keys else ["ckpt_path=last"]
    return [*old, *args, f"hydra.run.dir={run_dir}", *ckpt]


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path, log_dir: Path) -> Path | None:
    """The checkpoint file to resume from; "last" means this run directory's last.ckpt."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) != "last":
        return Path(ckpt_path).expanduser()
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    runs = sorted(log_dir.glob("runs/*/checkpoints/last.ckpt"), reverse=True)[:3]
    recent = "".join(f"\n  resume={p.parents[1]}" for p in runs)
    raise UserError(
        f"ckpt_path=last: this run directory {output_dir} has no checkpoints/last.ckpt. "
        "To continue an earlier run, name it with resume=<its run directory>"
        + (f"; the most recent ones:{recent}" if recent else ".")
    )


def keep_earlier_metrics(loggers: list, checkpoint: dict) -> None:
    """Keep the metrics of the epochs the checkpoint has trained, and only those.

    Lightning's CSV logger deletes an existing metrics.csv when it starts; rows written after
    the checkpoint (an epoch the kill cut short) are dropped, as that epoch runs again.
    TensorBoard gets `purge_step`: its readers hide the earlier events from that step on.
    (MLflow continues its run itself, see src/training/mlflow_logger.py.)
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            # The logger passes its keyword arguments on to the SummaryWriter it creates on
            # first use, which writes the purge marker; a writer re-opened after training
            # (for the figures) must not purge the resumed epochs again.
            logger._kwargs["purge_step"] = checkpoint["global_step"]
            logger.experiment  # noqa: B018
            del logger._kwargs["purge_step"]
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file():
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


def main_with_resume(main) -> None:
    """Run the Hydra `main` with `resume=DIR` expanded; a bad DIR exits with code 2."""
    try:
        sys.argv[1:] = resume_overrides(sys.argv[1:])
    except UserError as err:
        print(f"Error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    main()
