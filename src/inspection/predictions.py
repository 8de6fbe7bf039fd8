"""Run a trained checkpoint over images: the numbers behind `src.eval`, `src.predict`,
the figures and the notebooks.

Everything here runs in full precision on the CPU unless given another device, so a
bf16-trained run can differ from its logged val/loss in the third decimal.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from src.data.splits import Splits, image_split, require_classes
from src.data.transforms import train_transform, val_transform
from src.data.validation import report_files


@dataclass
class Predictions:
    """Per-image outputs of a model over a labelled image folder, in the folder's order."""

    paths: list[str]
    labels: torch.Tensor  # (N,) true class indices
    probs: torch.Tensor  # (N, C) softmax probabilities
    losses: torch.Tensor  # (N,) cross-entropy of each image
    class_names: list[str]

    @property
    def preds(self) -> torch.Tensor:
        return self.probs.argmax(dim=1)

    @property
    def accuracy(self) -> float:
        return (self.preds == self.labels).float().mean().item()

    @property
    def loss(self) -> float:
        return self.losses.mean().item()

    def confusion_matrix(self) -> torch.Tensor:
        """(C, C) counts: row = true class, column = predicted class."""
        n = len(self.class_names)
        return torch.bincount(self.labels * n + self.preds, minlength=n * n).reshape(n, n)

    def per_class_accuracy(self) -> dict[str, float | None]:
        """Recall of each class: right answers / images of that class (None if it has none)."""
        cm = self.confusion_matrix()
        totals = cm.sum(dim=1)
        return {
            name: (cm[i, i] / totals[i]).item() if totals[i] else None
            for i, name in enumerate(self.class_names)
        }


def labelled_images(
    splits: Splits, split: str, class_names: list[str], transform, skip_bad_images: bool = False
):
    """One split through the same checks and image reader as training, holding the
    checkpoint's classes. Returns the dataset and the images skipped as undecodable."""
    dataset, check = image_split(splits, split, transform)
    skipped = report_files([check], skip_bad_images)
    require_classes(dataset, class_names, "the checkpoint")
    return dataset, skipped


def val_images(splits, class_names, image_size=224, resize_size=256, skip_bad_images=True):
    """The validation split with the validation transform (resize + centre crop)."""
    transform = val_transform(image_size, resize_size)
    return labelled_images(splits, "val", class_names, transform, skip_bad_images)[0]


def train_images(splits, class_names, image_size=224, skip_bad_images=True):
    """The training split with the training augmentation (random crop + flip)."""
    transform = train_transform(image_size)
    return labelled_images(splits, "train", class_names, transform, skip_bad_images)[0]


@torch.inference_mode()
def predict_dataset(model, dataset, batch_size: int = 32) -> Predictions:
    """Probabilities and per-image losses of `model` over every image of `dataset`."""
    device = next(model.parameters()).device
    probs, labels, losses = [], [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits = model(images.to(device)).float().cpu()
        probs.append(logits.softmax(dim=1))
        losses.append(F.cross_entropy(logits, targets, reduction="none"))
        labels.append(targets)
    return Predictions(
        paths=[path for path, _ in dataset.samples],
        labels=torch.cat(labels),
        probs=torch.cat(probs),
        losses=torch.cat(losses),
        class_names=list(model.hparams.class_names),
    )
