"""Decode every image once before training, so a truncated JPEG stops the run (or is skipped)
before the first epoch instead of crashing a loader worker in epoch 3; with `data.cache_images`
that decode is kept in memory, instead of decoding each JPEG again in every epoch on the cores
that train."""

import hashlib
import json
import logging
import os
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from src.data.images import load_rgb
from src.errors import UserError
from src.files import write_text_atomic

log = logging.getLogger(__name__)

# This process's verdicts, on top of the cache file: the jobs of a local multirun check
# each image once even where the cache file cannot be written.
_checked: dict[str, dict] = {}
# (path, size, interpolation, draft_size) -> ((file size, mtime), image), for the paths of the
# latest three splits built (a run's train, val and test), so memory stays one run's cache:
# the jobs of a local multirun (one after another in one process) reuse them.
_kept: dict[tuple, tuple[list[int], torch.Tensor]] = {}
_recent: deque[set[tuple]] = deque(maxlen=3)


def report_files(checks, skip_bad_images: bool) -> list[str]:
    """Raise on the images that cannot be decoded ({path: why} of each split in `checks`)
    unless skipping them. Return the skipped."""
    bad = {path: why for check in checks for path, why in check.items()}
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


def check_image(path: str, read=load_rgb) -> str | None:
    """None when `read(path)` decodes the image, else a short reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            read(path)
    except Image.DecompressionBombWarning:
        return f"larger than Pillow's limit of {Image.MAX_IMAGE_PIXELS} pixels"
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, ...
        return f"{type(err).__name__}: {err}"
    return None


def check_images(paths: list[str], read=load_rgb) -> dict[str, str | None]:
    """`check_image` of every path (None: usable), decoded by `read` in threads (Pillow decodes
    without holding the GIL). Verdicts are cached by path, size and modification time, so
    later runs on the same folder only `stat` the files: one cache file per folder checked,
    under $XDG_CACHE_HOME (never inside the data)."""
    folder = hashlib.sha256((os.path.commonpath(paths) if paths else "").encode()).hexdigest()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache_file = base / "transfer-learning-template" / "image-checks" / f"{folder[:16]}.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    keys = {path: file_stat(path) for path in paths}
    cache.update({path: _checked[path] for path in keys if path in _checked})
    todo = [path for path, key in keys.items() if cache.get(path, {}).get("key") != key]
    if todo:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            problems = pool.map(lambda path: check_image(path, read), todo)
            for path, problem in zip(todo, problems, strict=True):
                cache[path] = _checked[path] = {"key": keys[path], "problem": problem}
        try:
            write_text_atomic(cache_file, json.dumps({path: cache[path] for path in keys}))
        except OSError as err:  # a read-only home directory only costs the next run time
            log.debug("Could not write the image-check cache %s: %s", cache_file, err)
    return {path: cache[path]["problem"] for path in keys}


def file_stat(path: str) -> list[int]:
    """Size and modification time: a file whose both are unchanged is taken as unchanged."""
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def decode(path: str, size: int, interpolation, draft_size: int | None = None) -> torch.Tensor:
    """One image as a (3, H, W) uint8 tensor whose shorter side is `size`, resized as the
    evaluation transform resizes it: validation then sees exactly the pixels it would decode,
    and training crops come from that smaller image."""
    image = F.resize(load_rgb(path, draft_size), size, interpolation, antialias=True)
    return F.pil_to_tensor(image)


def decode_into(images: dict, size: int, interpolation, draft_size, path: str) -> None:
    """`decode` the image at `path` into `images`: with `partial`, the image check's `read`,
    so that the check's decode is also the cache's."""
    images[path] = decode(path, size, interpolation, draft_size)


def cache_decoded(dataset, size: int, interpolation, draft_size, decoded: dict) -> None:
    """Make `dataset` (a `LabelledImages`) read its images from memory, each decoded once by
    `decode` with the `draft_size` its own loader uses (so that cached and uncached reading
    give the same pixels), or taken from `decoded` ({path: image}, see `decode_into`) or from an
    earlier job of this process for unchanged files. Its `transform` still runs per access."""
    keys = [(path, size, interpolation, draft_size) for path, _ in dataset.samples]
    stats = {key: file_stat(key[0]) for key in keys}
    todo = [key for key in keys if _kept.get(key, [None])[0] != stats[key]]
    if len(todo) < len(keys):
        log.info("%d decoded images reused from an earlier job", len(keys) - len(todo))
    fresh = {key: decoded[key[0]] for key in todo if key[0] in decoded}
    missing = [key for key in todo if key not in fresh]
    with ThreadPoolExecutor(os.cpu_count()) as pool:  # Pillow decodes without the GIL
        fresh.update(zip(missing, pool.map(lambda key: decode(*key), missing), strict=True))
    _kept.update({key: (stats[key], fresh[key]) for key in todo})
    _recent.append(set(keys))
    for key in _kept.keys() - set().union(*_recent):
        del _kept[key]
    dataset.loader = {key[0]: _kept[key][1] for key in keys}.__getitem__
