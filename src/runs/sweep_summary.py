"""The tables of a multirun, rebuilt after every job from what each job left in its directory:
`sweep_summary.csv` and `.md` (the jobs, and mean ± std over seeds and folds in
`sweep_summary_groups.csv`) at the sweep root; `notebooks/compare_sweep.ipynb` shows them."""

import csv
import statistics
from collections import Counter
from pathlib import Path

from src.files import atomic_write, write_text_atomic
from src.runs.resume import RUN_KEYS
from src.runs.run_dir import Run, job_key, override_key, sweep_runs
from src.runs.summary import RunSummary

try:
    import fcntl
except ImportError:  # Windows: jobs of one sweep then must not end at the same moment
    fcntl = None

COLUMNS = ["job", "status", "best_val_acc", "test_acc", "best_epoch", "wall_time_s"]
COLUMNS += ["overrides", "run_dir", "monitor", "monitor_best"]
STATUS_ORDER = {"completed": 0, "failed": 1, "unfinished": 2}
# Overrides whose values are repeats of one experiment, not different experiments.
AVERAGED_OVER = ("seed", "data.fold")
# Per-job results that are averaged over a group's completed jobs.
RESULTS = ("best_val_acc", "test_acc", "monitor_best")
GROUP_COLUMNS = ["overrides", "n", *(f"{r}_{s}" for r in RESULTS for s in ("mean", "std"))]
GROUP_COLUMNS += ["monitor", "incomplete", "seeds", "folds", "jobs"]


def write_sweep_summary(root: Path) -> list[dict]:
    """Collect every job under `root`, best first, and (re)write the CSV and Markdown tables:
    the jobs, and the jobs grouped over seeds and folds."""
    with open(root / ".sweep_summary.lock", "w") as lock:  # jobs of a parallel launcher
        if fcntl:  # end at once: one writer at a time (closing the file unlocks it)
            fcntl.flock(lock, fcntl.LOCK_EX)
        rows = sweep_rows(root)
        groups = group_jobs(rows)
        write_csv(root / "sweep_summary.csv", rows, [*COLUMNS, "error"])
        write_csv(root / "sweep_summary_groups.csv", groups, GROUP_COLUMNS)
        markdown = jobs_markdown(rows, root) + "\n" + groups_markdown(groups)
        write_text_atomic(root / "sweep_summary.md", markdown)
    return rows


def sweep_rows(root: Path) -> list[dict]:
    """One row per job under `root` (a job without `job_status.json` is still running, or was
    killed: "unfinished"); completed jobs by accuracy, best first, then failed and unfinished."""

    def rank(row: dict) -> tuple:  # ties keep the job order of `sweep_runs`
        acc = row["best_val_acc"]
        return STATUS_ORDER[row["status"]], acc is None, -(acc or 0.0)

    return sorted((job_row(root, run) for run in sweep_runs(root)), key=rank)


def job_row(root: Path, run: Run) -> dict:
    """One job's row, from the files it left in its directory (more keys than the CSV's)."""
    status = run.status or {"status": "unfinished"}
    summary = run.summary or RunSummary()
    return {
        "job": run.path.relative_to(root).as_posix(),
        "status": status["status"],
        "best_val_acc": summary.best_val_acc if run.summary else status.get("return_value"),
        "test_acc": summary.test_acc,
        "best_epoch": summary.best_epoch,
        "epochs_trained": summary.epochs_trained,
        "fit_time_s": summary.fit_time_s,
        "wall_time_s": status.get("wall_time_s"),
        # What the job trains, without how it was started (ckpt_path=last when resumed).
        "overrides": " ".join(o for o in run.overrides if override_key(o) not in RUN_KEYS),
        "run_dir": str(run.path),
        "monitor": summary.monitor,
        "monitor_best": summary.monitor_best,
        "error": status.get("error"),
    }


def group_jobs(rows: list[dict]) -> list[dict]:
    """One row per group of jobs (`sweep_rows`) whose overrides differ only in `seed` and
    `data.fold`, best mean best val/acc first. Only completed jobs count: `n` of them;
    `incomplete` jobs failed or never finished. `_std` is the sample standard deviation."""
    groups: dict[tuple, tuple[str, list[dict]]] = {}  # the first job's kept overrides, jobs
    for row in sorted(rows, key=lambda row: job_key(Path(row["job"]))):
        kept = [o for o in row["overrides"].split() if override_key(o) not in AVERAGED_OVER]
        groups.setdefault(tuple(sorted(kept)), (" ".join(kept), []))[1].append(row)
    table = []
    for overrides, members in groups.values():  # count, mean and std of the completed jobs
        done = [row for row in members if row["status"] == "completed"]
        group = {
            "overrides": overrides,
            "n": sum(row["best_val_acc"] is not None for row in done),
            "monitor": " ".join(sorted({row["monitor"] for row in done if row["monitor"]})),
            "incomplete": len(members) - len(done),
            "jobs": " ".join(row["job"] for row in members),
        }
        for result in RESULTS:
            values = [row[result] for row in done if row[result] is not None]
            group[f"{result}_mean"] = statistics.fmean(values) if values else None
            group[f"{result}_std"] = statistics.stdev(values) if len(values) > 1 else None
        # What the mean is over: the values of seed and of data.fold.
        given = [o for row in done for o in row["overrides"].split()]
        pairs = [(override_key(o), o.partition("=")[2]) for o in given]
        for key, column in (("seed", "seeds"), ("data.fold", "folds")):
            group[column] = " ".join(dict.fromkeys(v for k, v in pairs if k == key))
        table.append(group)
    return sorted(table, key=lambda g: (g["n"] == 0, -(g["best_val_acc_mean"] or 0.0)))


def shared_overrides(rows: list[dict]) -> list[str]:
    """The overrides of every row (jobs or groups), in the first one's order; none for one row."""
    if len(rows) < 2:
        return []
    common = set.intersection(*(set(row["overrides"].split()) for row in rows))
    return [o for o in rows[0]["overrides"].split() if o in common]


def distinct_overrides(rows: list[dict]) -> list[str]:
    """Each row's overrides without those every row shares (all of them for one row)."""
    shared = set(shared_overrides(rows))
    return [" ".join(o for o in row["overrides"].split() if o not in shared) for row in rows]


def jobs_markdown(rows: list[dict], root: Path) -> str:
    """The jobs as a Markdown table; overrides shared by every job are listed once above it."""
    counts = Counter(row["status"] for row in rows)
    done = ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s])
    lines = [f"# Sweep summary: {root}", "", f"{len(rows)} jobs: {done}."]
    lines += ["Sorted by best val/acc, best first; failed and unfinished jobs last.", ""]
    if shared := shared_overrides(rows):
        lines += [f"Overrides of every job: `{' '.join(shared)}`", ""]
    tested = any(row["test_acc"] is not None for row in rows)
    header = ["job", "status", "best val/acc", *["test acc"] * tested, "best epoch"]
    header += ["wall time (s)", "overrides", "run directory"]
    cells = []
    for row, own in zip(rows, distinct_overrides(rows), strict=True):
        job, status = row["job"], row["status"] + (f": {row['error']}" if row["error"] else "")
        numbers = [_fmt(row["best_val_acc"], "{:.4f}"), *[_fmt(row["test_acc"], "{:.4f}")] * tested]
        numbers += [_fmt(row["best_epoch"], "{}"), _fmt(row["wall_time_s"], "{:.1f}")]
        code = f"`{own}`" if own else ""
        cells.append([job, status.replace("|", "\\|"), *numbers, code, f"[{job}]({job})"])
    return "\n".join(lines) + "\n" + markdown_table(header, cells)


def groups_markdown(groups: list[dict]) -> str:
    """The groups as a Markdown section; overrides shared by every group are left out."""
    tested = any(g["test_acc_mean"] is not None for g in groups)
    monitored = any(g["monitor"] not in ("", "val/acc") for g in groups)
    header = ["overrides", "n", "best val/acc", *["test acc"] * tested]
    header += ["best of monitor"] * monitored + ["not completed", "seeds", "folds", "jobs"]
    rows = []
    for g, own in zip(groups, distinct_overrides(groups), strict=True):
        cells = [f"`{own}`" if own else "", str(g["n"]), _mean_std(g, "best_val_acc")]
        cells += [_mean_std(g, "test_acc")] * tested
        cells += [f"{g['monitor']} {_mean_std(g, 'monitor_best')}"] * monitored
        rows.append([*cells, str(g["incomplete"] or ""), g["seeds"], g["folds"], g["jobs"]])
    intro = (
        "## Mean ± std over seeds and folds\n\nJobs grouped by their overrides without `seed` "
        "and `data.fold`: mean ± sample standard deviation of the completed jobs, best mean "
        "first (also in `sweep_summary_groups.csv`).\n"
    )
    return intro + "\n" + markdown_table(header, rows)


def _mean_std(group: dict, result: str) -> str:
    mean, std = group[f"{result}_mean"], group[f"{result}_std"]
    return _fmt(mean, "{:.4f}") + ("" if mean is None or std is None else f" ± {std:.4f}")


def _fmt(value, pattern: str) -> str:
    return "" if value is None else pattern.format(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = (header, ["---"] * len(header), *rows)
    return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """`rows` as a CSV file of `columns` (other keys are left out), replaced in one step."""
    with atomic_write(path) as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
