"""Draw the figures of a run and of a sweep; every function returns a matplotlib Figure.

Figures are built without pyplot, on the non-interactive Agg canvas: nothing opens a
window or changes matplotlib's global state, in a training run, a test or a notebook
(where a returned figure displays inline).
"""

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

from src.data.transforms import Preprocessing

WRONG, RIGHT = "tab:red", "tab:green"
# Longest class name a title or tick label shows; longer ones keep their start and end.
NAME_CHARS = 20


def short(name: str, width: int = NAME_CHARS) -> str:
    """`name`, or its start and end around "…" when longer than `width` characters: class
    names often differ only at the end (`species_a_1`, `species_a_2`)."""
    if len(name) <= width:
        return name
    tail = (width - 1) // 2
    return f"{name[: width - 1 - tail]}…{name[-tail:]}"


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def image_grid(
    images: Sequence[torch.Tensor],
    titles: Sequence[str],
    pre: Preprocessing,
    colors: Sequence[str] | None = None,
    suptitle: str = "",
    ncols: int = 4,
) -> Figure:
    """Images normalised by `pre` in a grid, each titled; `colors` tints a title and frames the
    image.

    The grid is one picture on one Axes (tiles, frames, titles as text), not one Axes per
    image: sixteen Axes made this the slowest part of a short run's figures.
    """
    nrows = max(1, math.ceil(len(images) / ncols))
    height = max(int(image.shape[-2]) for image in images) if images else 1
    width = max(int(image.shape[-1]) for image in images) if images else 1
    per_inch = max(height, width) / 2.2  # every tile is about 2.2 inches wide
    frame = max(1, round(3 / 72 * per_inch)) if colors else 0  # about 3 points thick
    gap, band = round(0.15 * per_inch), round(0.45 * per_inch)  # room for two title lines
    cell_h, cell_w = height + 2 * frame + band, width + 2 * frame + gap
    canvas = np.full((nrows * cell_h, ncols * cell_w, 3), 255, dtype=np.uint8)
    top = 0.45 if suptitle else 0.05  # inches above the grid
    fig = new_figure(ncols * cell_w / per_inch, nrows * cell_h / per_inch + top, layout=None)
    ax = fig.add_axes((0, 0, 1, 1 - top / fig.get_figheight()))
    ax.set_axis_off()
    for i, image in enumerate(images):
        row, col = divmod(i, ncols)
        y, x = row * cell_h + band, col * cell_w + gap // 2
        color = colors[i] if colors else "black"
        h, w = image.shape[-2:]
        canvas[y : y + h + 2 * frame, x : x + w + 2 * frame] = np.multiply(to_rgb(color), 255)
        tile = pre.denormalize(image).numpy() * 255  # uint8: matplotlib resamples them faster
        canvas[y + frame : y + frame + h, x + frame : x + frame + w] = tile.round()
        ax.text(x + frame + w / 2, y - 0.04 * per_inch, titles[i], ha="center", va="bottom",
                fontsize=9, color=color)  # fmt: skip
    ax.imshow(canvas)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def augmented_batch(images: torch.Tensor, labels: torch.Tensor, class_names, pre) -> Figure:
    """The tutorial's `imshow` of a training batch: augmented inputs with their labels."""
    titles = [short(class_names[i]) for i in labels.tolist()]
    return image_grid(list(images), titles, pre, suptitle="Training inputs after augmentation")


def prediction_grid(images, predictions, indices: Sequence[int], pre: Preprocessing) -> Figure:
    """The tutorial's `visualize_model`: predicted (with probability) vs true label;
    wrong predictions are titled and framed in red."""
    titles, colors = [], []
    names = [short(name) for name in predictions.class_names]
    for i in indices:
        pred, true = int(predictions.preds[i]), int(predictions.labels[i])
        titles.append(f"pred {names[pred]} {predictions.probs[i, pred]:.2f}\ntrue {names[true]}")
        colors.append(RIGHT if pred == true else WRONG)
    wrong = sum(c == WRONG for c in colors)
    return image_grid(
        images, titles, pre, colors, suptitle=f"Validation predictions ({wrong} wrong, in red)"
    )


def top_losses(images, predictions, indices: Sequence[int], pre: Preprocessing) -> Figure:
    """The images the model gets most wrong, with their loss, prediction and true label."""
    names, titles = [short(name) for name in predictions.class_names], []
    for i in indices:
        pred, true = int(predictions.preds[i]), int(predictions.labels[i])
        titles.append(
            f"loss {predictions.losses[i]:.2f}\n"
            f"pred {names[pred]} {predictions.probs[i, pred]:.2f}\ntrue {names[true]}"
        )
    colors = [WRONG if predictions.preds[i] != predictions.labels[i] else RIGHT for i in indices]
    return image_grid(images, titles, pre, colors, suptitle="Highest-loss validation images")


def confusion_matrix(cm: torch.Tensor, class_names: Sequence[str], title: str = "") -> Figure:
    """Counts per (true, predicted) pair, coloured by each row's share of its class.

    Up to 10 classes each cell shows its count and share; with more, cells shrink so that
    the matrix stays about 12 inches wide, show only non-zero counts (the colour shows the
    share), and fonts shrink with them. Below 0.3 inches a cell (over 40 classes) holds
    no text: the colours and the class names remain.
    """
    n = len(class_names)
    cell = min(1.2, max(0.15, 12 / n))  # inches
    fig = new_figure(cell * n + 3, cell * n + 2.5)
    ax = fig.subplots()
    shares = cm.float() / cm.sum(dim=1, keepdim=True).clamp(min=1)
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    fontsize = min(11.0, cell * 18)
    for t in range(n):
        for p in range(n):
            if cell < 0.3 or (n > 10 and cm[t, p] == 0):
                continue
            color = "white" if shares[t, p] > 0.5 else "black"
            text = f"{int(cm[t, p])}\n{shares[t, p]:.0%}" if n <= 10 else f"{int(cm[t, p])}"
            ax.text(p, t, text, ha="center", va="center", color=color, fontsize=fontsize)
    names, label_size = [short(name) for name in class_names], min(10.0, max(4.0, cell * 20))
    # Many names: vertical, so that neighbours cannot overlap however long they are.
    rotation = {"rotation": 90 if n > 10 else 45, "ha": "right", "rotation_mode": "anchor"}
    rotation = rotation if n > 4 else {}
    ax.set_xticks(range(n), names, fontsize=label_size, **rotation)
    ax.set_yticks(range(n), names, fontsize=label_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, label="share of the true class", fraction=0.05, shrink=0.8)
    ax.set_title(title or f"Confusion matrix ({int(cm.sum())} images)")
    return fig


def learning_curves(metrics: dict[str, dict[int, float]], best_epoch: int | None = None) -> Figure:
    """Train/val loss and accuracy per epoch, and the learning rate; the best epoch marked."""
    fig = new_figure(13, 3.6)
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    for ax, name in ((loss_ax, "loss"), (acc_ax, "acc")):
        for stage in ("train", "val"):
            series = metrics.get(f"{stage}/{name}", {})
            ax.plot(list(series), list(series.values()), marker="o", ms=3, label=stage)
        ax.set_title({"loss": "Cross-entropy loss", "acc": "Accuracy"}[name])
    lr_keys = [k for k in metrics if k.startswith("lr-")]
    for key in lr_keys:
        lr_ax.plot(list(metrics[key]), list(metrics[key].values()), marker="o", ms=3, label=key)
    if lr_keys:
        lr_ax.set_yscale("log")
        # Plain "1e-03" labels: matplotlib's default, "$10^{-3}$", builds its TeX-like
        # parser on first use, which took longer than drawing the figure.
        lr_ax.yaxis.set_major_formatter(LogFormatter())
        lr_ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    lr_ax.set_title("Learning rate")
    for ax in (loss_ax, acc_ax, lr_ax):
        if best_epoch is not None:
            ax.axvline(best_epoch, color="gray", ls="--", lw=1, label=f"best epoch {best_epoch}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


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
        grid = torch.full((len(ys), len(xs)), float("nan"))
        for j, yv in enumerate(ys):
            for i, xv in enumerate(xs):
                cell = [
                    r[value]
                    for r in rows
                    if str(r.get("strategy")) == strategy and r.get(x) == xv and r.get(y) == yv
                    and r.get(value) is not None
                ]  # fmt: skip
                if cell:
                    grid[j, i] = sum(cell) / len(cell)
                    color = "white" if grid[j, i] < 0.4 else "black"  # readable on viridis
                    ax.text(i, j, f"{grid[j, i]:.3f}", ha="center", va="center", color=color)
        image = ax.imshow(grid.numpy(), cmap="viridis", vmin=0, vmax=1, origin="lower")
        ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
        ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{strategy}: {value}")
    fig.colorbar(image, ax=list(axes), label=value)
    return fig


def strategy_curves(curves: dict[str, dict[str, dict[int, float]]], metric: str = "val/acc"):
    """One panel per strategy side by side, one `metric` curve per job.

    `curves` maps strategy -> {job label -> {epoch: value}}; panels share the y axis.
    """
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
    """Mean ± std of the best val accuracy (and of the test accuracy, where there is one)
    of each group of `src.runs.sweep_groups.group_jobs`, best at the top; `labels` names
    the groups (default: their overrides)."""
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
            y = i + 0.2 * k
            ax.errorbar(mean, y, xerr=std or 0.0, fmt="o", capsize=4, color=f"C{k}",
                        label=f"{name} (mean ± std)" if i == 0 else None)  # fmt: skip
            text = f"{mean:.3f}" + ("" if std is None else f" ± {std:.3f}")
            ax.annotate(text, (mean, y), xytext=(0, 6 if k == 0 else -6), ha="center",
                        va="bottom" if k == 0 else "top", textcoords="offset points",
                        fontsize=8, color=f"C{k}")  # fmt: skip
    names = [f"{short(label or 'every job', 48)} (n={g['n']})" for g, label in rows]
    ax.set_yticks(range(len(rows)), names, fontsize=9)
    ax.set_ylim(len(rows) - 0.4, -0.6)  # best first, at the top
    ax.set_xlabel("accuracy")
    ax.set_title("Mean ± std over seeds and folds")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
