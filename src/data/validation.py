"""Check a dataset before training: its class folders, its images, its broken files.

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

from src.data.images import is_hidden, is_image_name, load_rgb
from src.errors import UserError
from src.files import write_text_atomic

log = logging.getLogger(__name__)

LAYOUT = (
    "<data_dir>/train/<class>/<image> and <data_dir>/val/<class>/<image> (and optionally "
    "test/), or one folder of class folders <data_dir>/<class>/<image>, or a CSV of path,label "
    "(data.labels_csv)"
)

# This process's verdicts, on top of the cache file: the jobs of a local multirun check
# each image once even where the cache file cannot be written.
_checked: dict[str, dict] = {}


@dataclass
class ClassFolders:
    """The images found under one folder of class folders (`train/`, or a one-folder dataset)."""

    folder: Path
    classes: list[str]
    images: dict[str, list[Path]]  # class name -> its image files
    ignored: list[str] = field(default_factory=list)  # files that are not images


@dataclass
class SplitCheck:
    """The images of one split after decoding each once: usable ones and broken ones."""

    usable: set[str] = field(default_factory=set)
    bad: dict[str, str] = field(default_factory=dict)  # path -> why it cannot be read


def require_folder(data_dir: Path) -> None:
    """Raise a `UserError` when `data_dir` is a file (an unzipped archive's path, say)."""
    if data_dir.is_file():
        raise UserError(
            f"data.data_dir {data_dir} is a file, not a folder. Expected a folder laid out as "
            f"{LAYOUT} (unzip an archive first)."
        )


def class_folders(folder: Path) -> ClassFolders:
    """The class sub-folders of `folder` and their image files; no image is decoded here.

    Raises a `UserError` for a layout no classifier can train on: no class folders, a
    single one, or a class folder without images.
    """
    # Every sub-folder is a class, as for torchvision's ImageFolder, except hidden ones
    # (.ipynb_checkpoints, .git, ...), which no one means as a class.
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not is_hidden(p))
    if not classes:
        raise UserError(
            f"{folder} has no class folders. Expected one sub-folder per class: {LAYOUT}."
        )
    if len(classes) == 1:
        raise UserError(
            f"{folder} has a single class folder ({classes[0]}/); a classifier needs at "
            f"least two: {folder}/<class_a>/, {folder}/<class_b>/, ..."
        )
    found = ClassFolders(folder, classes, {})
    found.ignored += [str(p) for p in folder.iterdir() if p.is_file()]
    empty = {}
    for name in classes:
        files = sorted(p for p in (folder / name).rglob("*") if p.is_file())
        found.images[name] = [p for p in files if is_image_name(p)]
        found.ignored += [str(p) for p in files if not is_image_name(p)]
        if not found.images[name]:
            empty[name] = len(files)
    if len(empty) == len(classes):
        raise UserError(
            f"No images in {folder}: its class folders {classes} hold no image files "
            f"(.jpg, .png, ...). Expected {LAYOUT}."
        )
    if empty:
        name, others = next(iter(empty.items()))
        raise UserError(
            f"Class folder {folder / name} holds no images"
            + (f" (only {others} other files)" if others else "")
            + ". Put .jpg/.png/... files in it or remove it; every class needs images in "
            "every split (train/ and val/)."
        )
    return found


def check_files(paths: list[str]) -> SplitCheck:
    """Decode each image of a split once (verdicts cached): which are usable, which not."""
    check = SplitCheck()
    for path, problem in check_images([Path(p) for p in paths]).items():
        if problem is None:
            check.usable.add(path)
        else:
            check.bad[path] = problem
    return check


def report_ignored(ignored: list[str]) -> None:
    """Log the files that are not images, once for the whole dataset."""
    if ignored:
        log.info("Ignored %d file(s) that are not images: %s", len(ignored), ", ".join(ignored))


def report_files(checks: list[SplitCheck], skip_bad_images: bool) -> list[str]:
    """Raise on images that cannot be decoded unless skipping them. Return the skipped."""
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
    keys = {str(p): file_key(p) for p in paths}
    cache.update({path: _checked[path] for path in keys if path in _checked})
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
