"""The one place an image file becomes pixels: every command reads images through `load_rgb`.

Training, validation, `src.eval`, `src.predict`, the figures and the notebooks all call it,
so the same file reaches the network as the same tensor everywhere.
"""

from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

# Pillow reads these; which of them a file really is comes from its bytes, not its name.
IMAGE_EXTENSIONS = IMG_EXTENSIONS


def load_rgb(path: str | Path) -> Image.Image:
    """Open any image Pillow reads as 8-bit RGB.

    Unlike a bare `convert("RGB")`, 16-bit greyscale is scaled down instead of clipped to
    white, and palette images with a transparent colour go through RGBA without a warning.
    CMYK, greyscale, RGBA and 8-bit palette images are converted as Pillow does.
    """
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit samples: keep the top byte (an "I" image from a 16-bit PNG holds the same).
            pixels = np.clip(np.asarray(img, dtype=np.int64) >> 8, 0, 255).astype(np.uint8)
            return Image.fromarray(pixels, "L").convert("RGB")
        if img.mode == "P" and "transparency" in img.info:
            return img.convert("RGBA").convert("RGB")
        return img.convert("RGB")


def is_image_name(path: Path) -> bool:
    """A visible file whose extension is one of Pillow's image formats."""
    return not is_hidden(path) and path.name.lower().endswith(IMAGE_EXTENSIONS)


def is_hidden(path: Path) -> bool:
    """`.DS_Store`, `._photo.jpg` (macOS resource forks) and other dot-files."""
    return path.name.startswith(".")
