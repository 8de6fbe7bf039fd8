"""Check an image-folder split before training: its layout, its images, its broken files.

Every image is opened and fully decoded once, in threads (Pillow decodes without holding the
GIL), so a truncated JPEG stops the run before the first epoch instead of crashing a loader
worker in epoch 3. Verdicts are cached by path, size and modification time; later runs on the
same folder only `stat` the files.
"""

import hashlib
import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from src.data.images import is_image_name, load_rgb
from src.errors import UserError
from src.files import write_text_atomic

log = logging.getLogger(__name__)

LAYOUT = "<data_dir>/train/<class>/<image> and <data_dir>/val/<class>/<image>"

# This process's verdicts, on top of the cache file: the jobs of a local multirun check
# each image once even where the cache file cannot be written.
_checked: dict[str, dict] = {}


@dataclass
class SplitCheck:
    """What one split (`train/` or `val/`) holds: usable images, broken ones, other files."""

    split_dir: Path
    classes: list[str]
    usable: set[str] = field(default_factory=set)
    bad: dict[str, str] = field(default_factory=dict)  # path -> why it cannot be read
    ignored: list[str] = field(default_factory=list)  # files that are not images


def require_folder(data_dir: Path) -> None:
    """Raise a `UserError` when `data_dir` is a file (an unzipped archive's path, say)."""
    if data_dir.is_file():
        raise UserError(
            f"data.data_dir {data_dir} is a file, not a folder. Expected a folder laid out as "
            f"{LAYOUT} (unzip an archive first)."
        )


def check_split(split_dir: Path) -> SplitCheck:
    """Check the layout of `split_dir` and decode each of its images once (cached)."""
    # Every sub-folder is a class, as for torchvision's ImageFolder.
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise UserError(
            f"{split_dir} has no class folders. Expected one sub-folder per class: {LAYOUT}."
        )
    if len(classes) == 1:
        raise UserError(
            f"{split_dir} has a single class folder ({classes[0]}/); a classifier needs at "
            f"least two: {split_dir}/<class_a>/, {split_dir}/<class_b>/, ..."
        )
    check = SplitCheck(split_dir, classes)
    check.ignored += [str(p) for p in split_dir.iterdir() if p.is_file()]
    candidates, empty = [], {}
    for name in classes:
        files = sorted(p for p in (split_dir / name).rglob("*") if p.is_file())
        images = [p for p in files if is_image_name(p)]
        check.ignored += [str(p) for p in files if not is_image_name(p)]
        if not images:
            empty[name] = len(files)
        candidates += images
    if len(empty) == len(classes):
        raise UserError(
            f"No images in {split_dir}: its class folders {classes} hold no image files "
            f"(.jpg, .png, ...). Expected {LAYOUT}."
        )
    if empty:
        name, others = next(iter(empty.items()))
        raise UserError(
            f"Class folder {split_dir / name} holds no images"
            + (f" (only {others} other files)" if others else "")
            + ". Put .jpg/.png/... files in it or remove it; every class needs images in "
            "train/ and val/."
        )
    for path, problem in check_images(candidates).items():
        if problem is None:
            check.usable.add(path)
        else:
            check.bad[path] = problem
    return check


def report_files(checks: list[SplitCheck], skip_bad_images: bool) -> list[str]:
    """Log ignored files once; raise on bad images unless skipping them. Return the skipped."""
    ignored = [path for check in checks for path in check.ignored]
    if ignored:
        log.info("Ignored %d file(s) that are not images: %s", len(ignored), ", ".join(ignored))
    bad = {path: why for check in checks for path, why in check.bad.items()}
    if not bad:
        return []
    listing = "\n".join(f"  {path}: {why}" for path, why in sorted(bad.items()))
    if not skip_bad_images:
        raise UserError(
            f"{len(bad)} image file(s) cannot be read:\n{listing}\n"
            "Fix or delete them, or set data.skip_bad_images=true to train without them."
        )
    log.warning("Skipping %d image file(s) that cannot be read:\n%s", len(bad), listing)
    return sorted(bad)


def check_image(path: str) -> str | None:
    """None when `path` decodes to an RGB image, else a short reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            load_rgb(path)
    except Image.DecompressionBombWarning:
        return f"larger than Pillow's limit of {Image.MAX_IMAGE_PIXELS} pixels"
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, ...
        return f"{type(err).__name__}: {err}"
    return None


def check_images(paths: list[Path]) -> dict[str, str | None]:
    """`check_image` for every path, reusing verdicts cached for unchanged files."""
    cache_file = cache_path(paths)
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    cache.update(_checked)
    keys = {str(p): file_key(p) for p in paths}
    todo = [path for path, key in keys.items() if cache.get(path, {}).get("key") != key]
    if todo:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for path, problem in zip(todo, pool.map(check_image, todo), strict=True):
                cache[path] = _checked[path] = {"key": keys[path], "problem": problem}
        try:
            write_text_atomic(cache_file, json.dumps({path: cache[path] for path in keys}))
        except OSError as err:  # a read-only home directory only costs the next run time
            log.debug("Could not write the image-check cache %s: %s", cache_file, err)
    return {path: cache[path]["problem"] for path in keys}


def file_key(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def cache_path(paths: list[Path]) -> Path:
    """One cache file per folder checked, under $XDG_CACHE_HOME (never inside the data)."""
    root = os.path.commonpath([str(p) for p in paths]) if paths else ""
    digest = hashlib.sha256(root.encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "transfer-learning-template" / "image-checks" / f"{digest}.json"
