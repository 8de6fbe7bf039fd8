"""Read what `src.train` leaves behind: a run directory, or a multirun (sweep) directory.

Paths inside `summary.json` are relative to wherever training was started, so a run is
located through its own directory instead: a run dir that was moved or copied still loads.
"""

import csv
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from omegaconf import OmegaConf

from src.errors import UserError


@dataclass
class Run:
    """One training run directory (`hydra.run.dir`, or one job of a multirun)."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser()
        if not (self.path / "config.yaml").is_file():
            raise UserError(
                f"{self.path} is not a run directory of src.train: it has no config.yaml. "
                "Pass the folder a training run wrote (hydra.run.dir, e.g. logs/runs/<date>)."
            )

    @cached_property
    def config(self) -> dict:
        """The run's resolved config, as plain dicts and lists."""
        return OmegaConf.to_container(OmegaConf.load(self.path / "config.yaml"))

    @cached_property
    def summary(self) -> dict:
        """The run's summary.json; empty when the run did not finish (or crashed)."""
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def class_names(self) -> list[str] | None:
        return self.summary.get("class_names")

    @property
    def best_ckpt(self) -> Path:
        """The best checkpoint inside this directory (the name summary.json gives, if several)."""
        found = sorted((self.path / "checkpoints").glob("best-*.ckpt"))
        named = Path(self.summary.get("best_ckpt") or "").name
        for path in found:
            if path.name == named:
                return path
        if len(found) == 1:
            return found[0]
        if not found:
            raise UserError(
                f"No best checkpoint in {self.path / 'checkpoints'}: the run was trained "
                "without the model_checkpoint callback or has not finished an epoch. "
                "Pass a checkpoint file with ckpt_path=... instead."
            )
        raise UserError(
            f"{len(found)} best checkpoints in {self.path / 'checkpoints'} and summary.json "
            "does not say which is best; pass one with ckpt_path=..."
        )

    def metrics(self) -> dict[str, dict[int, float]]:
        """Per-epoch metrics from csv/metrics.csv: {"val/acc": {epoch: value}, ...}."""
        return read_metrics(self.path / "csv" / "metrics.csv")


def read_metrics(path: Path) -> dict[str, dict[int, float]]:
    """Each key's value per epoch, from Lightning's CSVLogger file.

    The logger writes one row per logging call, so train, val and lr values sit on rows of
    their own, joined by the `epoch` column. The learning-rate rows (logged as an epoch
    starts) leave `epoch` empty: they belong to the next row that has one.
    """
    if not Path(path).is_file():
        raise UserError(
            f"No metrics file {path}: the run was trained without the csv logger (logger=none)."
        )
    metrics: dict[str, dict[int, float]] = {}
    pending: list[dict] = []  # rows waiting for their epoch
    last_epoch = -1

    def add(row: dict, epoch: int) -> None:
        for key, value in row.items():
            if key not in ("epoch", "step") and value not in ("", None):
                metrics.setdefault(key, {})[epoch] = float(value)

    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                pending.append(row)
                continue
            last_epoch = int(float(row["epoch"]))
            for waiting in pending:
                add(waiting, last_epoch)
            pending = []
            add(row, last_epoch)
    for waiting in pending:  # an epoch that started but logged nothing else
        add(waiting, last_epoch + 1)
    return metrics


def run_for_checkpoint(ckpt_path: Path) -> Run | None:
    """The run a checkpoint was saved in (`<run>/checkpoints/x.ckpt`), if it is still there."""
    candidate = Path(ckpt_path).expanduser().resolve().parent.parent
    return Run(candidate) if (candidate / "config.yaml").is_file() else None


def load_sweep(sweep_dir: Path) -> list[dict]:
    """One row per job of a multirun: job number, the overrides that differ between jobs,
    strategy, lr, gamma and the results from its summary.json (None where a job failed)."""
    sweep_dir = Path(sweep_dir).expanduser()
    job_dirs = []
    if sweep_dir.is_dir():
        job_dirs = [p for p in sweep_dir.iterdir() if (p / "config.yaml").is_file()]
    # Job folders are numbers: 0, 1, ..., 10 sorts after 9.
    job_dirs.sort(key=lambda p: (len(p.name), p.name))
    if not job_dirs:
        raise UserError(
            f"No job directories with a config.yaml under {sweep_dir}. Pass the folder a "
            "multirun wrote (hydra.sweep.dir, e.g. logs/multiruns/<date>)."
        )
    overrides = {job.name: _read_overrides(job) for job in job_dirs}
    varied = sorted({k for o in overrides.values() for k in o if _differs(overrides, k)})
    rows = []
    for job in job_dirs:
        run = Run(job)
        summary, model = run.summary, run.config.get("model", {})
        rows.append(
            {
                "job": job.name,
                **{key: overrides[job.name].get(key) for key in varied},
                "strategy": run.config.get("strategy", {}).get("name"),
                "lr": model.get("optimizer", {}).get("lr"),
                "gamma": model.get("scheduler", {}).get("gamma"),
                "best_val_acc": summary.get("best_val_acc"),
                "best_epoch": summary.get("best_epoch"),
                "epochs_trained": summary.get("epochs_trained"),
                "fit_time_s": summary.get("fit_time_s"),
                "run_dir": str(job),
            }
        )
    return rows


def curves_by_strategy(rows: list[dict], metric: str = "val/acc") -> dict:
    """{strategy: {job label: {epoch: value}}} of `metric`, for the jobs of `load_sweep`
    that logged metrics; the label names the job and its lr and gamma."""
    curves: dict[str, dict] = {}
    for row in rows:
        path = Path(row["run_dir"]) / "csv" / "metrics.csv"
        series = read_metrics(path).get(metric) if path.is_file() else None
        if series:
            label = f"job {row['job']}: lr={row['lr']} gamma={row['gamma']}"
            curves.setdefault(str(row["strategy"]), {})[label] = series
    return curves


def _read_overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    items = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else []
    return dict(item.split("=", 1) for item in items or [] if "=" in item)


def _differs(overrides: dict[str, dict[str, str]], key: str) -> bool:
    return len({o.get(key) for o in overrides.values()}) > 1


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain-text table (no pandas needed): floats to 4 digits, None as '-'."""
    if columns is None:
        columns = list(rows[0]) if rows else []

    def text(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    cells = [[text(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
