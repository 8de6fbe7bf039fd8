"""Draw the figures of a run; every function returns a matplotlib Figure.

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
    pre: Preprocessing | None,
    colors: Sequence[str] | None = None,
    suptitle: str = "",
    ncols: int = 4,
) -> Figure:
    """(3, H, W) images normalised by `pre` (None: pixels in [0, 1]) in a grid, each titled;
    `colors` tints a title and frames the image.

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
        pixels = pre.denormalize(image) if pre else image.permute(1, 2, 0)
        tile = pixels.numpy() * 255  # uint8: matplotlib resamples them faster
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


def labelled(predictions, indices: Sequence[int], loss: bool = False):
    """Titles (prediction with its probability, truth; the loss first when `loss`) and
    colours (wrong in red) of the images `indices` of `predictions`."""
    names, titles, colors = [short(name) for name in predictions.class_names], [], []
    for i in indices:
        pred, true = int(predictions.preds[i]), int(predictions.labels[i])
        title = f"pred {names[pred]} {predictions.probs[i, pred]:.2f}\ntrue {names[true]}"
        titles.append(f"loss {predictions.losses[i]:.2f}\n{title}" if loss else title)
        colors.append(RIGHT if pred == true else WRONG)
    return titles, colors


def prediction_grid(images, predictions, indices: Sequence[int], pre: Preprocessing) -> Figure:
    """The tutorial's `visualize_model`: predicted (with probability) vs true label;
    wrong predictions are titled and framed in red."""
    titles, colors = labelled(predictions, indices)
    title = f"Validation predictions ({colors.count(WRONG)} wrong, in red)"
    return image_grid(images, titles, pre, colors, suptitle=title)


def top_losses(images, predictions, indices: Sequence[int], pre: Preprocessing) -> Figure:
    """The images the model gets most wrong, with their loss, prediction and true label."""
    titles, colors = labelled(predictions, indices, loss=True)
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
