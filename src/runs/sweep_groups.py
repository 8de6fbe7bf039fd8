"""Mean ± std over repeats: the jobs of a sweep grouped by their overrides without `seed`
and `data.fold`.

`python -m src.train -m seed=1,2,3 strategy=finetune,frozen` trains each strategy three
times; one job's best val/acc is one draw of a noisy number, and the group's mean and
standard deviation are what to report. The sweep summary (`src.runs.sweep_summary`) adds
this table to `sweep_summary.md` and writes it to `sweep_summary_groups.csv`;
`notebooks/compare_sweep.ipynb` plots it with error bars.
"""

import csv
import statistics
from io import StringIO
from pathlib import Path

from src.runs.run_dir import job_key, override_key

# Overrides whose values are repeats of one experiment, not different experiments.
AVERAGED_OVER = ("seed", "data.fold")
# Per-job results that are averaged, as named in the sweep summary's rows.
RESULTS = ("best_val_acc", "test_acc", "monitor_best")
COLUMNS = [
    "overrides",
    "n",
    *(f"{result}_{stat}" for result in RESULTS for stat in ("mean", "std")),
    "monitor",
    "incomplete",
    "seeds",
    "folds",
    "jobs",
]


def group_jobs(rows: list[dict]) -> list[dict]:
    """One row per group of jobs whose overrides differ only in `seed` and `data.fold`.

    `rows` are the sweep summary's job rows (`src.runs.sweep_summary.sweep_rows`). Only
    completed jobs count: `n` of them, and `incomplete` jobs of the group failed or never
    finished. `_std` is the sample standard deviation (n - 1 in the denominator; empty
    for a single job). Groups are sorted by mean best val/acc, best first.
    """
    groups: dict[tuple, list[tuple[list[str], dict]]] = {}
    for row in sorted(rows, key=lambda row: job_key(Path(row["job"]))):
        overrides = row["overrides"].split()
        kept = [o for o in overrides if override_key(o) not in AVERAGED_OVER]
        groups.setdefault(tuple(sorted(kept)), []).append((overrides, row))
    table = [_group_row(members) for members in groups.values()]
    return sorted(table, key=lambda g: (g["n"] == 0, -(g["best_val_acc_mean"] or 0.0)))


def _group_row(members: list[tuple[list[str], dict]]) -> dict:
    """Count, mean and std of one group's completed jobs; `members` are (overrides, row)."""
    done = [(overrides, row) for overrides, row in members if row["status"] == "completed"]
    rows = [row for _, row in done]

    def values_of(key: str) -> str:
        """The values of `key` among the completed jobs: what the mean is over."""
        found = [o.split("=", 1)[1] for overrides, _ in done for o in overrides
                 if override_key(o) == key]  # fmt: skip
        return " ".join(dict.fromkeys(found))

    kept = [o for o in members[0][0] if override_key(o) not in AVERAGED_OVER]
    group = {
        "overrides": " ".join(kept),
        "n": sum(row.get("best_val_acc") is not None for row in rows),
    }
    for result in RESULTS:
        values = [row[result] for row in rows if row.get(result) is not None]
        group[f"{result}_mean"] = statistics.fmean(values) if values else None
        group[f"{result}_std"] = statistics.stdev(values) if len(values) > 1 else None
    group["monitor"] = " ".join(sorted({row["monitor"] for row in rows if row.get("monitor")}))
    group["incomplete"] = len(members) - len(done)
    group["seeds"], group["folds"] = values_of("seed"), values_of("data.fold")
    group["jobs"] = " ".join(row["job"] for _, row in members)
    return group


def groups_csv(groups: list[dict]) -> str:
    out = StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(groups)
    return out.getvalue()


def distinct_overrides(groups: list[dict]) -> list[str]:
    """Each group's overrides without those every group shares (all of them for one group)."""
    if len(groups) < 2:
        return [g["overrides"] for g in groups]
    common = set.intersection(*(set(g["overrides"].split()) for g in groups))
    return [" ".join(o for o in g["overrides"].split() if o not in common) for g in groups]


def groups_markdown(groups: list[dict]) -> str:
    """The groups as a Markdown section; overrides shared by every group are left out."""
    tested = any(g["test_acc_mean"] is not None for g in groups)
    monitored = any(g["monitor"] not in ("", "val/acc") for g in groups)
    header = ["overrides", "n", "best val/acc"]
    header += ["test acc"] * tested + ["best of monitor"] * monitored
    header += ["not completed", "seeds", "folds", "jobs"]
    lines = [
        "## Mean ± std over seeds and folds",
        "",
        "Jobs grouped by their overrides without `seed` and `data.fold`: mean ± sample "
        "standard deviation of the completed jobs, best mean first "
        "(also in `sweep_summary_groups.csv`).",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for g, own in zip(groups, distinct_overrides(groups), strict=True):
        cells = [f"`{own}`" if own else "", str(g["n"]), _mean_std(g, "best_val_acc")]
        cells += [_mean_std(g, "test_acc")] * tested
        cells += [f"{g['monitor']} {_mean_std(g, 'monitor_best')}"] * monitored
        cells += [str(g["incomplete"] or ""), g["seeds"], g["folds"], g["jobs"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_std(group: dict, result: str) -> str:
    mean, std = group[f"{result}_mean"], group[f"{result}_std"]
    if mean is None:
        return ""
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"
