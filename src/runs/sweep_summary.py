"""A Hydra callback that tabulates a multirun: `sweep_summary.csv` and `.md` at the sweep root.

Each job's row comes from what the job left in its directory: `.hydra/overrides.yaml`
(written by Hydra before the job starts), `summary.json` (written by `src.train`) and
`job_status.json` (written here when the job ends, failed or not). The table is rebuilt
after every job, not only at the end of the sweep: when a job fails, Hydra's sweepers
raise once the batch is done and `on_multirun_end` never runs, and a sweep killed half-way
should still show what finished. A job with a directory but no status is still running,
or was killed (listed as "unfinished"). Below the jobs, a second table groups them by their
overrides without `seed` and `data.fold`: mean ± std over repeats (`src.runs.sweep_groups`).
"""

import csv
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from src.files import write_text_atomic
from src.runs.run_dir import STATUS_FILE, Run, job_key, multirun_dir, sweep_runs
from src.runs.slurm import slurm_task_rank
from src.runs.sweep_groups import group_jobs, groups_csv, groups_markdown
from src.runs.sweep_resume import completed_earlier

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


class SweepSummary(Callback):
    """Writes the sweep summary after every job of a multirun and once more at its end."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._skipped: set[str] = set()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        job_dir = config.hydra.runtime.output_dir
        self._started[job_dir] = time.perf_counter()
        if config.hydra.mode == RunMode.MULTIRUN and not slurm_task_rank():
            # The job will skip training (see src.runs.sweep_resume): its status stands.
            if completed_earlier(Run(job_dir, check=False)):
                self._skipped.add(job_dir)
            write_sweep_summary(multirun_dir(config.hydra))  # a sweep killed now shows this job

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        # Tasks 1..n-1 of a multi-task SLURM job train the same job as task 0, which reports it.
        if config.hydra.mode != RunMode.MULTIRUN or slurm_task_rank():
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        started = self._started.pop(str(job_dir), None)
        failed = job_return.status != JobStatus.COMPLETED
        if str(job_dir) in self._skipped and not failed:
            self._skipped.discard(str(job_dir))
            write_sweep_summary(multirun_dir(config.hydra))
            return
        status = {
            "status": "failed" if failed else "completed",
            # `job_return.return_value` re-raises a failed job's exception; read the field.
            "error": _one_line(job_return._return_value) if failed else None,
            "return_value": None if failed else _float_or_none(job_return._return_value),
            "wall_time_s": None if started is None else round(time.perf_counter() - started, 2),
        }
        write_text_atomic(job_dir / STATUS_FILE, json.dumps(status, indent=2) + "\n")
        write_sweep_summary(multirun_dir(config.hydra))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = multirun_dir(config.hydra)
        if root.is_dir():
            rows = write_sweep_summary(root)
            log.info("Sweep summary of %d jobs: %s", len(rows), root / "sweep_summary.md")


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
        "overrides": " ".join(run.overrides),
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


def _one_line(error: BaseException) -> str:
    """The root cause: Hydra wraps errors raised while instantiating a `_target_`."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _float_or_none(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


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
