"""Check that an exported model answers as its checkpoint does, on real images.

Both see the same tensors, made by the one image reader (`load_rgb`) and the validation
transform, as in every other command; the checkpoint runs in fp32 on the CPU.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from src.data.images import load_rgb
from src.data.transforms import Preprocessing
from src.errors import UserError
from src.inspection.predictions import val_images
from src.inspection.run_figures import sample
from src.models.export import Probabilities

log = logging.getLogger(__name__)


@dataclass
class Parity:
    """How far the exported model's probabilities are from the checkpoint's."""

    source: str  # where the images came from
    images: int
    max_diff: float  # largest |probability difference| over images and classes
    top1_agree: int  # images whose most probable class is the same
    batch_diff: float  # largest difference between one image alone and in the batch
    tolerance: float

    @property
    def ok(self) -> bool:
        return (
            self.max_diff <= self.tolerance
            and self.top1_agree == self.images
            and self.batch_diff <= self.tolerance
        )

    def __str__(self) -> str:
        return (
            f"Parity on {self.images} image(s) from {self.source}: largest probability "
            f"difference {self.max_diff:.2e} (limit {self.tolerance:g}), top-1 the same for "
            f"{self.top1_agree}/{self.images}, one image alone vs in the batch "
            f"{self.batch_diff:.2e}."
        )


def user_images(files: list[Path], pre: Preprocessing, draft_size=None):
    """The readable images among `files`, through the evaluation transform."""
    transform = pre.eval_transform()
    tensors, unreadable = [], []
    for path in files:
        try:
            tensors.append(transform(load_rgb(path, draft_size)))
        except (OSError, SyntaxError, ValueError):  # PIL's UnidentifiedImageError too
            unreadable.append(str(path))
    if unreadable:
        log.warning("Not readable images, left out of the parity check: %s", ", ".join(unreadable))
    if not tensors:
        raise UserError(f"No readable image among images={[str(p) for p in files][:5]}.")
    return torch.stack(tensors)


def run_val_images(run, class_names, n: int, pre: Preprocessing, draft_size=None):
    """`n` images of the run's validation split (a fixed sample over every class), checked
    and read as training reads them."""
    splits = run.splits(wanted=("val",))
    dataset = val_images(splits, class_names, pre, draft_size=draft_size)
    return torch.stack([dataset[i][0] for i in sample(len(dataset), n)])


def check_parity(model, exported, images: torch.Tensor, source: str, tolerance: float) -> Parity:
    """Compare `exported(images)` with the checkpoint's `model` (fp32, eval mode)."""
    with torch.inference_mode():
        expected = Probabilities(model.float().eval())(images)
    got = exported(images)
    alone = exported(images[:1])
    return Parity(
        source=source,
        images=len(images),
        max_diff=(got - expected).abs().max().item(),
        top1_agree=int((got.argmax(dim=1) == expected.argmax(dim=1)).sum()),
        batch_diff=(alone - got[:1]).abs().max().item(),
        tolerance=tolerance,
    )
