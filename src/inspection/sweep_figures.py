"""Figures of a multirun, for `notebooks/compare_sweep.ipynb`: accuracy over a grid of two
swept values, the jobs' curves per strategy, and mean ± std over seeds and folds."""

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from src.inspection.figures import new_figure, short


def sweep_heatmap(
    rows: list[dict], x: str = "lr", y: str = "gamma", value: str = "best_val_acc"
) -> Figure:
    """`value` over an `x` by `y` grid, one panel per strategy; cells with several jobs
    (other swept keys, seeds) show their mean, empty cells are jobs that failed or were not run."""
    strategies = sorted({str(r.get("strategy")) for r in rows})
    xs = sorted({r[x] for r in rows if r.get(x) is not None})
    ys = sorted({r[y] for r in rows if r.get(y) is not None})
    fig = new_figure(1.3 * len(xs) * len(strategies) + 2.5, 0.8 * len(ys) + 2)
    axes = fig.subplots(1, len(strategies), squeeze=False)[0]
    for ax, strategy in zip(axes, strategies, strict=True):
        mine = [r for r in rows if str(r.get("strategy")) == strategy and r.get(value) is not None]
        cells = defaultdict(list)
        for r in mine:
            if r.get(x) in xs and r.get(y) in ys:
                cells[ys.index(r[y]), xs.index(r[x])].append(r[value])
        grid = np.full((len(ys), len(xs)), np.nan)
        for (j, i), values in cells.items():
            grid[j, i] = np.mean(values)
            color = "white" if grid[j, i] < 0.4 else "black"  # readable on viridis
            ax.text(i, j, f"{grid[j, i]:.3f}", ha="center", va="center", color=color)
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, origin="lower")
        ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
        ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{strategy}: {value}")
    fig.colorbar(image, ax=list(axes), label=value)
    return fig


def strategy_curves(curves: dict[str, dict[str, dict[int, float]]], metric: str = "val/acc"):
    """One panel per strategy side by side (a shared y axis), one `metric` curve per job:
    `curves` maps strategy -> {job label -> {epoch: value}}."""
    strategies = sorted(curves)
    fig = new_figure(5.5 * len(strategies), 3.8)
    axes = fig.subplots(1, len(strategies), squeeze=False, sharey=True)[0]
    for ax, strategy in zip(axes, strategies, strict=True):
        for label, series in curves[strategy].items():
            ax.plot(list(series), list(series.values()), marker="o", ms=3, label=label)
        ax.set_title(f"{strategy}: {metric}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def sweep_groups(groups: list[dict], labels: Sequence[str] | None = None) -> Figure:
    """Mean ± std of the best val accuracy (and of the test accuracy, where there is one) of
    each group of `src.runs.sweep_summary.group_jobs`, best at the top; `labels` names the
    groups (default: their overrides)."""
    labels = labels or [g["overrides"] for g in groups]
    rows = [(g, label) for g, label in zip(groups, labels, strict=True) if g["n"]]
    fig = new_figure(9, 0.6 * len(rows) + 1.6)
    ax = fig.subplots()
    series = [("best_val_acc", "best val/acc")]
    if any(g["test_acc_mean"] is not None for g, _ in rows):
        series.append(("test_acc", "test acc"))
    for k, (key, name) in enumerate(series):
        for i, (g, _) in enumerate(rows):
            mean, std = g[f"{key}_mean"], g[f"{key}_std"]
            if mean is None:
                continue
            y, label = i + 0.2 * k, f"{name} (mean ± std)" if i == 0 else None
            ax.errorbar(mean, y, xerr=std or 0.0, fmt="o", capsize=4, color=f"C{k}", label=label)
            text = f"{mean:.3f}" + ("" if std is None else f" ± {std:.3f}")
            where = {"xytext": (0, -6), "va": "top"} if k else {"xytext": (0, 6), "va": "bottom"}
            style = {"ha": "center", "fontsize": 8, "color": f"C{k}", **where}
            ax.annotate(text, (mean, y), textcoords="offset points", **style)
    names = [f"{short(label or 'every job', 48)} (n={g['n']})" for g, label in rows]
    ax.set_yticks(range(len(rows)), names, fontsize=9)
    ax.set_ylim(len(rows) - 0.4, -0.6)  # best first, at the top
    ax.set_xlabel("accuracy")
    ax.set_title("Mean ± std over seeds and folds")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
