"""The tables of a multirun: `sweep_summary.csv` and `.md` at the sweep root, and what the
notebooks read of a sweep.

Each job's row comes from what the job left in its directory: `.hydra/overrides.yaml`
(written by Hydra before the job starts), `summary.json` (written by `src.train`) and
`job_status.json` (written by `src.runs.sweep.SweepSummary` when the job ends, failed or
not). The tables are rebuilt after every job, not only at the end of the sweep: when a job
fails, Hydra's sweepers raise once the batch is done and `on_multirun_end` never runs, and a
sweep killed half-way should still show what finished. A job with a directory but no status
is still running, or was killed (listed as "unfinished"). Below the jobs, a second table
groups them by their overrides without `seed` and `data.fold`: mean ± std over repeats
(`src.runs.sweep_groups`).
"""

import csv
import logging
from contextlib import contextmanager
from pathlib import Path

from src.errors import UserError
from src.files import write_text_atomic
from src.runs.resume import RUN_KEYS
from src.runs.run_dir import Run, job_key, override_key, read_metrics, sweep_runs
from src.runs.summary import RunSummary
from src.runs.sweep_groups import group_jobs, groups_csv, groups_markdown

try:
    import fcntl
except ImportError:  # Windows: jobs of one sweep then must not end at the same moment
    fcntl = None

log = logging.getLogger(__name__)

COLUMNS = [
    "job", "status", "best_val_acc", "test_acc", "best_epoch", "wall_time_s", "overrides",
    "run_dir", "monitor", "monitor_best",
]  # fmt: skip
STATUS_ORDER = {"completed": 0, "failed": 1, "unfinished": 2}


def write_sweep_summary(root: Path) -> list[dict]:
    """Collect every job under `root`, best first, and (re)write the CSV and Markdown tables:
    the jobs, and the jobs grouped over seeds and folds."""
    with _locked(root / ".sweep_summary.lock"):
        rows = sweep_rows(root)
        groups = group_jobs(rows)
        write_text_atomic(root / "sweep_summary.csv", _to_csv(rows))
        write_text_atomic(root / "sweep_summary_groups.csv", groups_csv(groups))
        markdown = _to_markdown(rows, root) + "\n" + groups_markdown(groups)
        write_text_atomic(root / "sweep_summary.md", markdown)
    return rows


def sweep_rows(root: Path) -> list[dict]:
    """One row per job under `root` (the rows of sweep_summary.csv), best first."""
    return sorted((job_row(root, run) for run in sweep_runs(root)), key=_rank)


def job_row(root: Path, run: Run) -> dict:
    """One job's row, from the files it left in its directory."""
    status = run.status or {"status": "unfinished"}
    summary = run.summary
    best_val_acc = summary.best_val_acc if summary else status.get("return_value")
    return {
        "job": run.path.relative_to(root).as_posix(),
        "status": status["status"],
        "best_val_acc": best_val_acc,
        "test_acc": summary.test_acc if summary else None,
        "best_epoch": summary.best_epoch if summary else None,
        "wall_time_s": status.get("wall_time_s"),
        # What the job trains, without how it was started (ckpt_path=last when resumed).
        "overrides": " ".join(o for o in run.overrides if override_key(o) not in RUN_KEYS),
        "run_dir": str(run.path),
        "monitor": summary.monitor if summary else None,
        "monitor_best": summary.monitor_best if summary else None,
        "error": status.get("error"),
    }


def _rank(row: dict) -> tuple:
    """Completed jobs by accuracy (best first), then failed and unfinished ones, by job."""
    acc = row["best_val_acc"]
    order = job_key(Path(row["job"]))
    return (STATUS_ORDER[row["status"]], acc is None, -(acc or 0.0), order)


def _to_csv(rows: list[dict]) -> str:
    from io import StringIO

    out = StringIO()
    writer = csv.DictWriter(out, fieldnames=[*COLUMNS, "error"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _to_markdown(rows: list[dict], root: Path) -> str:
    """A table for reading: overrides shared by every job are listed once above it."""
    override_lists = [row["overrides"].split() for row in rows]
    common = set.intersection(*map(set, override_lists)) if rows else set()
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUS_ORDER}
    lines = [
        f"# Sweep summary: {root}",
        "",
        f"{len(rows)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ".",
        "Sorted by best val/acc, best first; failed and unfinished jobs last.",
        "",
    ]
    if common and len(rows) > 1:
        shared = " ".join(o for o in override_lists[0] if o in common)
        lines += [f"Overrides of every job: `{shared}`", ""]
    tested = any(row["test_acc"] is not None for row in rows)
    header = ["job", "status", "best val/acc", *["test acc"] * tested, "best epoch"]
    header += ["wall time (s)", "overrides", "run directory"]
    lines += ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for row, overrides in zip(rows, override_lists, strict=True):
        own = " ".join(o for o in overrides if o not in common or len(rows) == 1)
        status = row["status"] + (f": {row['error']}" if row["error"] else "")
        cells = [
            row["job"],
            status.replace("|", "\\|"),
            _fmt(row["best_val_acc"], "{:.4f}"),
            *[_fmt(row["test_acc"], "{:.4f}")] * tested,
            _fmt(row["best_epoch"], "{}"),
            _fmt(row["wall_time_s"], "{:.1f}"),
            f"`{own}`" if own else "",
            f"[{row['job']}]({row['job']})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value, pattern: str) -> str:
    return "" if value is None else pattern.format(value)


def one_line(error: BaseException) -> str:
    """The root cause: Hydra wraps errors raised while instantiating a `_target_`."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


@contextmanager
def _locked(lock_path: Path):
    """Jobs of a parallel launcher (joblib, SLURM) end concurrently; one writer at a time."""
    if fcntl is None:
        yield
        return
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_sweep(sweep_dir: Path) -> list[dict]:
    """One row per job of a multirun that got as far as its config: job number, the
    overrides that differ between jobs, strategy, lr, gamma and the results from its
    summary.json (None where a job failed)."""
    sweep_dir = Path(sweep_dir).expanduser()
    runs = [run for run in sweep_runs(sweep_dir) if run.config]
    if not runs:
        raise UserError(
            f"No job directories with a config.yaml under {sweep_dir}. Pass the folder a "
            "multirun wrote (hydra.sweep.dir, e.g. logs/multiruns/<date>)."
        )
    overrides = {run.path: dict(o.split("=", 1) for o in run.overrides if "=" in o) for run in runs}
    varied = sorted({k for o in overrides.values() for k in o if _differs(overrides, k)})
    rows = []
    for run in runs:
        summary, config = run.summary or RunSummary(), run.config
        model = config.get("model", {})  # (runs of older versions: the recipe inside it)
        rows.append(
            {
                "job": run.path.relative_to(sweep_dir).as_posix(),
                **{key: overrides[run.path].get(key) for key in varied},
                "strategy": config.get("strategy", {}).get("name"),
                "lr": (config.get("optimizer") or model.get("optimizer") or {}).get("lr"),
                "gamma": (config.get("scheduler") or model.get("scheduler") or {}).get("gamma"),
                "best_val_acc": summary.best_val_acc,
                "best_epoch": summary.best_epoch,
                "epochs_trained": summary.epochs_trained,
                "fit_time_s": summary.fit_time_s,
                "run_dir": str(run.path),
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


def _differs(overrides: dict, key: str) -> bool:
    return len({o.get(key) for o in overrides.values()}) > 1


def rows_table(rows: list[dict], columns: list[str] | None = None):
    """`rows` as a rich `Table` to print (`rich.print`), in a terminal or a notebook: floats to
    4 digits, None as '-'."""
    from rich.table import Table

    columns = columns or (list(rows[0]) if rows else [])
    table = Table(*columns)
    for row in rows:
        cells = [row.get(column) for column in columns]
        table.add_row(*("-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
                        for v in cells))  # fmt: skip
    return table
