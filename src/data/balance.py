"""Class imbalance in the training data: a sampler that draws every class equally often
(`data.sampler=balanced`), and loss weights from the class counts (`model.class_weights`)."""

from collections.abc import Sequence

import torch
from torch.utils.data import WeightedRandomSampler

from src.errors import UserError


def class_counts(targets: Sequence[int], num_classes: int) -> list[int]:
    """Images per class index."""
    return torch.bincount(torch.as_tensor(list(targets)), minlength=num_classes).tolist()


def balanced_sampler(targets: Sequence[int], num_classes: int) -> WeightedRandomSampler:
    """Draw each class equally often: image i with probability 1 / (images of its class).

    An epoch keeps its length (one draw per training image, with replacement), so minority
    images repeat within an epoch and majority images are left out. The draws come from
    torch's global generator, which `SeedEachEpoch` seeds from (seed, epoch) before each
    epoch: the same seed draws the same images, also in a resumed run.
    """
    counts = torch.tensor(class_counts(targets, num_classes), dtype=torch.double)
    weights = 1.0 / counts[torch.as_tensor(list(targets))]
    return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True)


def loss_weights(setting, targets: Sequence[int], class_names: Sequence[str]) -> list[float] | None:
    """The training loss's class weights for `model.class_weights`.

    `balanced`: n_images / (n_classes * images of the class), scikit-learn's
    `compute_class_weight("balanced")`, so that every class adds the same total weight to an
    epoch. A list gives one weight per class in `class_names` order; `null` none.
    """
    if setting is None:
        return None
    if setting == "balanced":
        import numpy as np
        from sklearn.utils.class_weight import compute_class_weight

        counts = class_counts(targets, len(class_names))
        empty = [name for name, count in zip(class_names, counts, strict=True) if count == 0]
        if empty:
            raise UserError(
                f"model.class_weights=balanced needs training images of every class; "
                f"none of {empty}."
            )
        labels = np.asarray(list(targets))
        return compute_class_weight("balanced", classes=np.unique(labels), y=labels).tolist()
    if isinstance(setting, str) or len(setting) != len(class_names):
        raise UserError(
            f"Invalid model.class_weights={setting!r}: use balanced, null, or one weight per "
            f"class ({len(class_names)}: {', '.join(class_names)}), e.g. "
            f"model.class_weights=[{','.join(['1.0'] * len(class_names))}]."
        )
    return [float(w) for w in setting]
