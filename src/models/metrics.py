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

from torchmetrics import ClasswiseWrapper, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from src.errors import UserError


def metric_class_names(class_names: Sequence[str]) -> list[str]:
    """Class names as they appear in metric keys: characters that loggers (MLflow) or
    checkpoint file names cannot take become `_`; names that then collide get their index."""
    names = [re.sub(r"[^\w.\- ]", "_", str(name)) for name in class_names]
    return [f"{n}_{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def split_metrics(split: str, class_names: Sequence[str], extra: dict | None = None):
    """acc, f1_macro, balanced_acc, class_acc/<class> and the `extra` metrics (`conf/metrics`:
    name -> a torchmetrics `_target_` config, built with `num_classes`) of one split, keyed
    `<split>/<name>`.

    A class that has no image in the split (and is never predicted) is left out of the
    macro averages rather than counted as 0.
    """
    num_classes = len(class_names)
    per_class = MulticlassAccuracy(num_classes, average=None)
    metrics = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        "balanced_acc": MulticlassRecall(num_classes, average="macro"),
        "class_acc": ClasswiseWrapper(
            per_class, labels=metric_class_names(class_names), prefix="class_acc/"
        ),
    }
    if extra:
        from hydra.utils import instantiate

        metrics.update(
            {name: instantiate(cfg, num_classes=num_classes) for name, cfg in extra.items()}
        )
    return MetricCollection(
        metrics,
        prefix=f"{split}/",
        # Shared states would leave the wrapped per-class metric "never updated" in
        # torchmetrics' eyes (a warning every epoch); a few small metrics cost nothing.
        compute_groups=False,
    )


def higher_is_better(metrics: MetricCollection, class_names: Sequence[str]) -> dict[str, bool]:
    """Every key a split logs (`<split>/loss`, `<split>/acc`, ..., `<split>/class_acc/<class>`)
    and whether a higher value is better, as each torchmetrics metric says."""
    split = metrics.prefix
    keys = {f"{split}loss": False}
    for name, metric in metrics.items(keep_base=True):
        if name == "class_acc":
            keys.update({f"{split}class_acc/{n}": True for n in metric_class_names(class_names)})
        else:
            keys[f"{split}{name}"] = bool(metric.higher_is_better)
    return keys


def require_monitored(monitor: str, mode: str, metrics: MetricCollection, class_names) -> None:
    """Stop unless `monitor` is a validation metric this model logs and `monitor_mode` keeps
    its best checkpoint (not its worst)."""
    keys = higher_is_better(metrics, class_names)
    if monitor not in keys:
        names = list(keys)
        shown = names if len(names) <= 10 else [*names[:9], "..."]
        raise UserError(
            f"monitor={monitor} is not a metric the model logs. Use one of: "
            f"{', '.join(shown)} (per-class names as in val/class_acc/<class>)."
        )
    right = "max" if keys[monitor] else "min"
    if mode != right:
        raise UserError(
            f"monitor={monitor} with monitor_mode={mode} keeps the worst checkpoint: "
            f"{monitor} is better when {'higher' if keys[monitor] else 'lower'}. "
            f"Add monitor_mode={right}."
        )
