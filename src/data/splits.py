"""Build the labelled dataset of one split (`train/`, `val/`) of an image-folder tree.

The one folder builder: the datamodule, `src.eval` and the figures all get their images
here, checked the same way (layout, undecodable files) and read through `load_rgb`.
"""

from functools import partial
from pathlib import Path

from torchvision.datasets import ImageFolder

from src.data.images import load_rgb
from src.data.validation import SplitCheck, check_split, require_folder
from src.errors import UserError


def image_split(
    data_dir: Path, split: str, transform, draft_size: int | None = None
) -> tuple[ImageFolder, SplitCheck]:
    """`data_dir/split` as an ImageFolder of its decodable images, and what the check found.

    Images that cannot be decoded are left out of the dataset; `report_files` (in
    `src.data.validation`) decides whether that stops the run or only skips them.
    `draft_size` is passed to `load_rgb` (`data.jpeg_draft`).
    """
    data_dir = Path(data_dir).expanduser()
    require_folder(data_dir)
    if not data_dir.is_dir():
        raise UserError(
            f"Data folder not found: {data_dir}. Point data.data_dir at the folder holding "
            f"{split}/<class>/ images (the data may have moved)."
        )
    split_dir = data_dir / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in data_dir.iterdir())
        raise UserError(
            f"Missing split folder {split_dir}. Expected {data_dir}/{split}/<class>/ with "
            f"images (fix data.data_dir); found {found}."
        )
    check = check_split(split_dir)
    try:
        usable = check.usable.__contains__
        loader = partial(load_rgb, draft_size=draft_size) if draft_size else load_rgb
        dataset = ImageFolder(split_dir, transform, loader=loader, is_valid_file=usable)
    except FileNotFoundError as err:
        raise UserError(
            f"No images in {split_dir}: expected one sub-folder per class holding image "
            f"files (.jpg, .png, ...). ({err})"
        ) from err
    return dataset, check


def require_classes(dataset: ImageFolder, class_names: list[str], trained_on: str) -> None:
    """Stop unless `dataset` holds exactly `class_names`, in the same (label) order."""
    if list(dataset.classes) != list(class_names):
        raise UserError(
            f"{dataset.root} holds classes {dataset.classes}, but {trained_on} has "
            f"{list(class_names)}. Both need the same class sub-folders."
        )
