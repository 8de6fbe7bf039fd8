"""The classification metrics logged for a split, and the metric a run monitors.

Plain accuracy hides a minority class: 9 ants for every bee, a model that always says "ant"
scores 0.9. So each split also logs per-class accuracy (`<split>/class_acc/<class>`: right
answers / images of that class, as `src.eval` reports it), macro F1 and balanced accuracy
(the mean of the per-class accuracies, i.e. macro recall: scikit-learn's
`balanced_accuracy_score`). Any of the validation metrics can be the run's `monitor`: the
one that picks the best checkpoint.
"""

import re
from collections.abc import Sequence

from torchmetrics import ClasswiseWrapper, MaxMetric, MetricCollection, MinMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from src.errors import UserError

# Logged for every split besides the per-class accuracies; "loss" is the plain cross-entropy.
SPLIT_METRICS = ("loss", "acc", "f1_macro", "balanced_acc")


def metric_class_names(class_names: Sequence[str]) -> list[str]:
    """Class names as they appear in metric keys: characters that loggers (MLflow) or
    checkpoint file names cannot take become `_`; names that then collide get their index."""
    names = [re.sub(r"[^\w.\- ]", "_", str(name)) for name in class_names]
    return [f"{n}_{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def split_metrics(split: str, class_names: Sequence[str]) -> MetricCollection:
    """acc, f1_macro, balanced_acc and class_acc/<class> of one split, keyed `<split>/...`.

    A class that has no image in the split (and is never predicted) is left out of the
    macro averages rather than counted as 0.
    """
    num_classes = len(class_names)
    per_class = MulticlassAccuracy(num_classes, average=None)
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
            "balanced_acc": MulticlassRecall(num_classes, average="macro"),
            "class_acc": ClasswiseWrapper(
                per_class, labels=metric_class_names(class_names), prefix="class_acc/"
            ),
        },
        prefix=f"{split}/",
        # Shared states would leave the wrapped per-class metric "never updated" in
        # torchmetrics' eyes (a warning every epoch); four small metrics cost nothing.
        compute_groups=False,
    )


def logged_metrics(split: str, class_names: Sequence[str]) -> list[str]:
    """Every metric key a split logs, e.g. val/loss, val/acc, ..., val/class_acc/ants."""
    per_class = [f"class_acc/{name}" for name in metric_class_names(class_names)]
    return [f"{split}/{name}" for name in (*SPLIT_METRICS, *per_class)]


def metric_mode(metric: str) -> str:
    """`min` for the loss (`val/loss`), `max` for every other metric logged here."""
    return "min" if metric.split("/", 1)[-1] == "loss" else "max"


def check_monitor(monitor: str, mode: str) -> None:
    """Stop when `monitor_mode` would keep the worst checkpoint of `monitor`."""
    if mode not in ("max", "min"):
        raise UserError(f"Invalid monitor_mode={mode!r}: use max or min.")
    if metric_mode(monitor) != mode:
        raise UserError(
            f"monitor={monitor} with monitor_mode={mode} keeps the worst checkpoint: "
            f"{monitor} is better when {'lower' if mode == 'max' else 'higher'}. "
            f"Add monitor_mode={metric_mode(monitor)}."
        )


def require_monitored(monitor: str, class_names: Sequence[str]) -> None:
    """Stop unless `monitor` is a validation metric this model logs."""
    names = logged_metrics("val", class_names)
    if monitor not in names:
        shown = names if len(names) <= 10 else [*names[:9], "..."]
        raise UserError(
            f"monitor={monitor} is not a metric the model logs. Use one of: "
            f"{', '.join(shown)} (per-class names as in val/class_acc/<class>)."
        )


def best_so_far(mode: str) -> MaxMetric | MinMetric:
    """The running best of a metric, kept in checkpoints so that a resumed run continues it."""
    best = MaxMetric() if mode == "max" else MinMetric()
    best.persistent(True)
    return best


def restart_best(state_dict: dict, prefix: str, best: MaxMetric | MinMetric | None) -> None:
    """Replace a checkpoint's best-so-far under `prefix` by `best`'s fresh state (none when
    `best` is None): the checkpoint tracked another metric, whose best means nothing here."""
    for key in [key for key in state_dict if key.startswith(prefix)]:
        del state_dict[key]
    if best is not None:
        state_dict.update({prefix + key: value for key, value in best.state_dict().items()})
