"""The one place an image file becomes pixels: training, evaluation, prediction, export, the
figures and the notebooks all read images through `load_rgb`, so the same file reaches the
network as the same tensor everywhere."""

from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS


def load_rgb(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Open any image Pillow reads as 8-bit RGB.

    Unlike a bare `convert("RGB")`, 16-bit greyscale is scaled down instead of clipped to
    white, and palette images with a transparent colour go through RGBA without a warning.
    CMYK, greyscale, RGBA and 8-bit palette images are converted as Pillow does.

    `draft_size` (`data.jpeg_draft`: the run's `resize_size`): a JPEG at least twice that
    size on both sides is decoded at the smallest 1/2, 1/4 or 1/8 scale (Pillow's draft mode)
    that keeps both sides at least `draft_size`: 64x fewer pixels for a 4000x3000 photo, and
    slightly different ones, so every command must read with the same `draft_size`.
    """
    with Image.open(path) as img:
        if draft_size:
            img.draft(img.mode, (draft_size, draft_size))  # a no-op for other formats
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit samples: keep the top byte (an "I" image from a 16-bit PNG holds the same).
            pixels = np.clip(np.asarray(img, dtype=np.int64) >> 8, 0, 255).astype(np.uint8)
            return Image.fromarray(pixels, "L").convert("RGB")
        if img.mode == "P" and "transparency" in img.info:
            return img.convert("RGBA").convert("RGB")
        return img.convert("RGB")


def is_image_name(path: Path) -> bool:
    """A visible file with an image extension (torchvision's ImageFolder's list); which format
    it really is comes from its bytes, not its name."""
    return not is_hidden(path) and path.name.lower().endswith(IMG_EXTENSIONS)


def is_hidden(path: Path) -> bool:
    """`.DS_Store`, `._photo.jpg` (macOS resource forks) and other dot-files."""
    return path.name.startswith(".")
