"""Run a trained checkpoint over images: the numbers behind `src.eval`, `src.predict`,
the figures and the notebooks.

`predict_dataset` runs in full precision on the CPU unless given another device, so a
bf16-trained run can differ from its logged val/loss in the third decimal. The figures that
`src.train` saves come instead from `KeepValidationOutputs`: the outputs of the best
checkpoint's own final validation, in the run's precision, without a second pass.
"""

from dataclasses import dataclass

import torch
from lightning.pytorch import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset
from torchmetrics.functional.classification import multiclass_confusion_matrix

from src.data.splits import Splits, image_split, require_classes
from src.data.transforms import Preprocessing, with_tta
from src.data.validation import report_files


@dataclass
class Predictions:
    """Per-image outputs of a model over a labelled image folder, in the folder's order."""

    paths: list[str]
    labels: torch.Tensor  # (N,) true class indices
    probs: torch.Tensor  # (N, C) softmax probabilities
    losses: torch.Tensor  # (N,) cross-entropy of each image
    class_names: list[str]
    precision: str = "32-true"  # the Lightning precision the outputs were computed in

    @classmethod
    def from_logits(cls, paths, logits, labels, class_names, precision="32-true"):
        """Softmax probabilities and per-image cross-entropy, in fp32, of the model's logits."""
        logits = logits.float()
        return cls(
            paths=list(paths),
            labels=labels,
            probs=logits.softmax(dim=1),
            losses=F.cross_entropy(logits, labels, reduction="none"),
            class_names=list(class_names),
            precision=precision,
        )

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
        """(C, C) counts: row = true class, column = predicted class (torchmetrics')."""
        return multiclass_confusion_matrix(self.preds, self.labels, len(self.class_names))

    def per_class_accuracy(self) -> dict[str, float | None]:
        """Recall of each class: right answers / images of that class (None if it has none)."""
        cm = self.confusion_matrix()
        totals = cm.sum(dim=1)
        return {
            name: (cm[i, i] / totals[i]).item() if totals[i] else None
            for i, name in enumerate(self.class_names)
        }


def labelled_images(
    splits: Splits,
    split: str,
    class_names: list[str],
    transform,
    skip_bad_images: bool = False,
    draft_size: int | None = None,
):
    """One split through the same checks and image reader as training, holding the
    checkpoint's classes. Returns the dataset and the images skipped as undecodable."""
    dataset, check = image_split(splits, split, transform, draft_size)
    skipped = report_files([check], skip_bad_images)
    require_classes(dataset, class_names, "the checkpoint")
    return dataset, skipped


def val_images(splits, class_names, pre: Preprocessing, skip_bad_images=True, draft_size=None):
    """The validation split with the evaluation transform (resize + centre crop)."""
    transform = pre.eval_transform()
    return labelled_images(splits, "val", class_names, transform, skip_bad_images, draft_size)[0]


@torch.inference_mode()
def predict_dataset(model, dataset, batch_size: int = 32, tta: str | None = None) -> Predictions:
    """Probabilities and per-image losses of `model` over every image of `dataset`; with
    `tta="flip"`, of the mean of each image's and its mirror image's probabilities."""
    device = next(model.parameters()).device
    probs = with_tta(lambda images: model(images).float().softmax(dim=1), tta)
    outputs, labels = [], []  # logits, or with tta the probabilities
    for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images = images.to(device)
        outputs.append((probs(images) if tta else model(images).float()).cpu())
        labels.append(targets)
    paths, names = [path for path, _ in dataset.samples], model.hparams.class_names
    outputs, labels = torch.cat(outputs), torch.cat(labels)
    if tta is None:
        return Predictions.from_logits(paths, outputs, labels, names)
    losses = F.nll_loss(outputs.clamp_min(1e-12).log(), labels, reduction="none")
    return Predictions(list(paths), labels, outputs, losses, list(names))


class KeepValidationOutputs(Callback):
    """Keeps the logits of `trainer.validate` (not of the validations inside `fit`).

    `src.train` validates the best checkpoint once after fitting; the figures reuse those
    outputs instead of loading the checkpoint again and running a second, fp32 pass. They
    are in the run's precision (bf16-mixed on most GPUs and recent CPUs), exactly what
    `best_ckpt_val_acc` and `best_ckpt_val_loss` in summary.json were computed from.
    """

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.precision = "32-true"
        self.world_size = 1

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.logits, self.labels = [], []
        self.precision, self.world_size = str(trainer.precision), trainer.world_size

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING and not trainer.sanity_checking:
            self.logits.append(outputs.detach().float().cpu())
            self.labels.append(batch[1].cpu())

    def predictions(self, dataset, class_names) -> tuple[Predictions, object] | None:
        """The kept outputs as `Predictions` over the images of `dataset` they belong to.

        The validation loader runs through `dataset` in order, so the kept outputs belong to
        its first images (all of them, unless `trainer.limit_val_batches` cut validation
        short: then the figures show only the images validated). None when nothing was kept
        or under DDP, where this process saw only its share of the images.
        """
        if not self.logits or self.world_size > 1:
            return None
        labels = torch.cat(self.labels)
        shown = dataset if len(labels) == len(dataset) else Subset(dataset, range(len(labels)))
        paths = [path for path, _ in dataset.samples[: len(labels)]]
        logits = torch.cat(self.logits)
        return Predictions.from_logits(paths, logits, labels, class_names, self.precision), shown
