"""Run a trained checkpoint over images: the numbers behind `src.eval`, `src.predict`,
the figures and the notebooks.

Everything here runs in full precision on the CPU unless given another device, so a
bf16-trained run can differ from its logged val/loss in the third decimal.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from src.checkpoints import load_checkpoint
from src.data.transforms import train_transform, val_transform
from src.errors import UserError
from src.models.transfer import TransferLearningModel


def load_model(ckpt_path: str | Path, device: str = "cpu") -> TransferLearningModel:
    """The model of a checkpoint, in eval mode, without fetching its ImageNet weights.

    The file is read once, through `load_checkpoint`'s checks (missing, truncated, another
    model); the model is rebuilt from the hyper-parameters saved beside its weights.
    """
    checkpoint = load_checkpoint(ckpt_path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    if not hparams.get("class_names"):
        raise UserError(f"Checkpoint {ckpt_path} holds no class_names; it cannot name its labels.")
    model = TransferLearningModel(**{**hparams, "weights": None})
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


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


def image_folder(
    data_dir: str | Path, split: str, class_names: list[str], transform
) -> ImageFolder:
    """`data_dir/split` as an ImageFolder whose classes must be the checkpoint's classes."""
    folder = Path(data_dir).expanduser() / split
    if not folder.is_dir():
        raise UserError(
            f"Image folder not found: {folder}. Point data.data_dir at the folder holding "
            f"{split}/<class>/ images (the run's data may have moved)."
        )
    dataset = ImageFolder(folder, transform=transform)
    if dataset.classes != list(class_names):
        raise UserError(
            f"{folder} holds classes {dataset.classes}, but the checkpoint was trained on "
            f"{list(class_names)}; evaluate it on data with the same class folders."
        )
    return dataset


def val_images(data_dir, class_names, image_size=224, resize_size=256) -> ImageFolder:
    """The validation split with the validation transform (resize + centre crop)."""
    return image_folder(data_dir, "val", class_names, val_transform(image_size, resize_size))


def train_images(data_dir, class_names, image_size=224) -> ImageFolder:
    """The training split with the training augmentation (random crop + flip)."""
    return image_folder(data_dir, "train", class_names, train_transform(image_size))


@torch.inference_mode()
def predict_dataset(
    model: TransferLearningModel, dataset: ImageFolder, batch_size: int = 32
) -> Predictions:
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
