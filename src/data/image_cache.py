"""Decode every image of a split once and keep it in memory (`data.cache_images`), instead of
decoding each JPEG again in every epoch on the cores that train."""

import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch
from torchvision.transforms.v2 import functional as F

from src.data.images import load_rgb
from src.data.validation import file_stat

log = logging.getLogger(__name__)

# (path, size, interpolation, draft_size) -> ((file size, mtime), image), for the paths of the
# latest three splits built (a run's train, val and test), so memory stays one run's cache:
# the jobs of a local multirun (one after another in one process) reuse them.
_kept: dict[tuple, tuple[list[int], torch.Tensor]] = {}
_recent: deque[set[tuple]] = deque(maxlen=3)


def decode(path: str, size: int, interpolation, draft_size: int | None = None) -> torch.Tensor:
    """One image as a (3, H, W) uint8 tensor whose shorter side is `size`, resized as the
    evaluation transform resizes it: validation then sees exactly the pixels it would decode,
    and training crops come from that smaller image."""
    image = F.resize(load_rgb(path, draft_size), size, interpolation, antialias=True)
    return F.pil_to_tensor(image)


def decode_into(images: dict, size: int, interpolation, draft_size, path: str) -> None:
    """`decode` the image at `path` into `images`: with `partial`, the image check's `read`
    (`src.data.validation`), so that the check's decode is also the cache's."""
    images[path] = decode(path, size, interpolation, draft_size)


def cache_decoded(dataset, size: int, interpolation, draft_size=None, decoded=None):
    """Make `dataset` (a `LabelledImages`) read its images from memory, each decoded once by
    `decode` with the `draft_size` its own loader uses (so that cached and uncached reading
    give the same pixels), or taken from `decoded` ({path: image}, see `decode_into`) or from an
    earlier job of this process for unchanged files. Its `transform` still runs per access."""
    keys = [(path, size, interpolation, draft_size) for path, _ in dataset.samples]
    stats = {key: file_stat(key[0]) for key in keys}
    todo = [key for key in keys if _kept.get(key, [None])[0] != stats[key]]
    if len(todo) < len(keys):
        log.info("%d decoded images reused from an earlier job", len(keys) - len(todo))
    fresh = {key: decoded[key[0]] for key in todo if key[0] in (decoded or {})}
    missing = [key for key in todo if key not in fresh]
    # PIL releases the GIL while decoding and resizing, so threads decode in parallel.
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        fresh.update(zip(missing, pool.map(lambda key: decode(*key), missing), strict=True))
    for key in todo:
        _kept[key] = (stats[key], fresh[key])
    _recent.append(set(keys))
    for key in _kept.keys() - set().union(*_recent):
        del _kept[key]
    dataset.loader = {key[0]: _kept[key][1] for key in keys}.__getitem__
    return dataset
