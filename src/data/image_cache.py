"""Decode every image of a split once and keep it in memory as a small uint8 tensor.

The tutorial decodes each JPEG again in every epoch; on a 2-core machine that decoding
competes with training for the same cores. Images are stored resized so that their shorter
side is `size` (the validation resize, 256), so validation sees exactly the tutorial's
pixels and training crops come from a 256-pixel image instead of the original.

Decoded images also outlive the datamodule that asked for them: Hydra's basic launcher runs
the jobs of a local multirun one after another in one process, and each job finds the
images of the previous one here instead of decoding them again. An image is reused only
while its file has the same size and modification time and the same `size`/`draft_size`
are asked for, so a job gets the same tensors it would have decoded itself.
"""

import logging
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms.v2 import functional as F

from src.data.images import load_rgb

log = logging.getLogger(__name__)

# (split folder, size, draft_size) -> {path: ((file size, mtime), image)}, latest last. Two
# entries: the train and val splits of the latest run, so memory stays one run's cache.
_kept: OrderedDict[tuple, dict[str, tuple[tuple[int, int], torch.Tensor]]] = OrderedDict()
KEPT_SPLITS = 2


class DecodedImageCache(Dataset):
    """An ImageFolder whose images were decoded once; `transform` still runs per access.

    Keeps `classes`, `class_to_idx`, `samples` and `targets` of the wrapped folder. Images
    are read with `load_rgb(path, draft_size)`: give the `draft_size` the folder's own
    loader uses, so that cached and uncached reading give the same pixels.
    """

    def __init__(
        self,
        folder: ImageFolder,
        size: int,
        threads: int | None = None,
        draft_size: int | None = None,
    ) -> None:
        self.classes, self.class_to_idx = folder.classes, folder.class_to_idx
        self.samples, self.targets = folder.samples, folder.targets
        self.transform = folder.transform
        paths = [path for path, _ in self.samples]
        self.images = decoded_images(paths, folder.root, size, draft_size, threads)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    @property
    def nbytes(self) -> int:
        return sum(image.numel() for image in self.images)


def decode(path: str, size: int, draft_size: int | None = None) -> torch.Tensor:
    """One image as a (3, H, W) uint8 tensor whose shorter side is `size`."""
    return F.pil_to_tensor(F.resize(load_rgb(path, draft_size), size, antialias=True))


def decoded_images(
    paths: list[str], root, size: int, draft_size: int | None, threads: int | None = None
) -> list[torch.Tensor]:
    """`decode` of every path, taking unchanged files from the images kept in this process."""
    key = (str(Path(root)), size, draft_size)
    kept = _kept.pop(key, {})
    stats = {path: file_stat(path) for path in paths}
    todo = [path for path in paths if path not in kept or kept[path][0] != stats[path]]
    # PIL releases the GIL while decoding and resizing, so threads decode in parallel.
    with ThreadPoolExecutor(threads or os.cpu_count()) as pool:
        fresh = dict(zip(todo, pool.map(lambda p: decode(p, size, draft_size), todo), strict=True))
    if len(todo) < len(paths):
        log.info("%s: %d decoded images reused from an earlier job", root, len(paths) - len(todo))
    images = {path: fresh[path] if path in fresh else kept[path][1] for path in paths}
    _kept[key] = {path: (stats[path], images[path]) for path in paths}
    while len(_kept) > KEPT_SPLITS:
        _kept.popitem(last=False)
    return [images[path] for path in paths]


def file_stat(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def estimated_cache_bytes(num_images: int, size: int) -> int:
    """Rough memory of a cache of `num_images` photos (4:3) at shorter side `size`."""
    return num_images * size * (size * 4 // 3) * 3
