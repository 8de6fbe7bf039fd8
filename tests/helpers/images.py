"""Small generated image folders and pictures, written into a test's tmp_path."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = [(200, 40, 40), (40, 40, 200), (40, 200, 40), (200, 200, 40)]


def write_class_images(folder: Path, class_index: int, count: int, size=(48, 40)) -> None:
    """`count` JPEGs `<folder name>_<i>.jpg` in one solid colour per class (easy to learn)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shade = tuple(min(255, v + 5 * i) for v in PALETTE[class_index % len(PALETTE)])
        Image.new("RGB", size, shade).save(folder / f"{folder.name}_{i}.jpg")


def make_image_folder(
    root: Path, classes=("ants", "bees"), train_per_class=6, val_per_class=4, size=(48, 40)
) -> Path:
    """Write train/ and val/ JPEGs, one solid colour per class (easy to learn)."""
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(classes):
            write_class_images(root / split / name, c, count, size)
    return root


def make_class_folders(root: Path, counts: dict[str, int] | None = None) -> Path:
    """One folder of class folders, without splits: `counts[class]` JPEGs per class."""
    for c, (name, count) in enumerate((counts or {"ants": 10, "bees": 10}).items()):
        write_class_images(root / name, c, count)
    return root


def write_truncated_jpeg(path: Path) -> None:
    """A real JPEG (noise, so the data is large) with its last 40% cut off."""
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    path.write_bytes(data[: int(len(data) * 0.6)])


def odd_images() -> dict[str, Image.Image]:
    """One image per mode and format a photo folder can hold."""
    gradient = Image.linear_gradient("L").resize((40, 30))
    palette = gradient.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    sixteen_bit = Image.fromarray((np.asarray(gradient, dtype=np.uint16) * 257).astype(np.uint16))
    return {
        "grey.jpg": gradient,
        "rgba.png": gradient.convert("RGBA"),
        "palette.png": palette,
        "cmyk.jpg": Image.new("CMYK", (40, 30), (0, 255, 0, 0)),
        "sixteen_bit.png": sixteen_bit,
        "photo.webp": gradient.convert("RGB"),
        "photo.bmp": gradient.convert("RGB"),
        "tiny.png": Image.new("RGB", (1, 1), (9, 9, 9)),
        "large.jpg": Image.new("RGB", (4000, 3000), (50, 90, 130)),
    }


def picture_forms(size=(64, 48)) -> dict[str, tuple[Image.Image, str]]:
    """The same kind of picture in every form a user's folder holds: {file name: (image,
    format to save it in)}. Some are saved under another format's extension."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    grey = rgb.convert("L")
    sixteen = Image.fromarray((np.asarray(grey, dtype=np.uint16) * 257 + 100).astype(np.uint16))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 3
    return {
        "rgb8.jpg": (rgb, "JPEG"),
        "grey8.png": (grey, "PNG"),
        "grey16.png": (sixteen, "PNG"),
        "palette_transparent.png": (palette, "PNG"),
        "cmyk.jpg": (rgb.convert("CMYK"), "JPEG"),
        "rgba.webp": (rgb.convert("RGBA"), "WEBP"),
        "photo.bmp": (rgb, "BMP"),
        "photo.tiff": (rgb, "TIFF"),
        "png_named.jpg": (rgb, "PNG"),
        "webp_named.png": (grey, "WEBP"),
    }
