"""Decode every image of a split once and keep it in memory as a small uint8 tensor.

The tutorial decodes each JPEG again in every epoch; on a 2-core machine that decoding
competes with training for the same cores. Images are stored resized so that their shorter
side is `size` (the validation resize, 256), so validation sees exactly the tutorial's
pixels and training crops come from a 256-pixel image instead of the original.

Decoded images also outlive the datamodule that asked for them: Hydra's basic launcher runs
the jobs of a local multirun one after another in one process, and each job finds the
images of the previous one here instead of decoding them again. An image is reused only
while its file has the same size and modification time and the same `size`, interpolation and
`draft_size` are asked for, so a job gets the same tensors it would have decoded itself.
"""

import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from src.data.images import load_rgb

log = logging.getLogger(__name__)

# (path, size, interpolation, draft_size) -> ((file size, mtime), image), for the paths of the
# latest three splits built (a run's train, val and test), so memory stays one run's cache.
_kept: dict[tuple, tuple[tuple[int, int], torch.Tensor]] = {}
_recent: deque[set[tuple]] = deque(maxlen=3)


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
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
        threads: int | None = None,
        draft_size: int | None = None,
    ) -> None:
        self.classes, self.class_to_idx = folder.classes, folder.class_to_idx
        self.samples, self.targets = folder.samples, folder.targets
        self.transform = folder.transform
        paths = [path for path, _ in self.samples]
        self.images = decoded_images(paths, size, interpolation, draft_size, threads)

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


def decode(path: str, size: int, interpolation, draft_size: int | None = None) -> torch.Tensor:
    """One image as a (3, H, W) uint8 tensor whose shorter side is `size`, resized as the
    evaluation transform resizes it (so that its resize then changes nothing)."""
    image = F.resize(load_rgb(path, draft_size), size, interpolation, antialias=True)
    return F.pil_to_tensor(image)


def decoded_images(
    paths: list[str], size: int, interpolation, draft_size: int | None, threads: int | None = None
) -> list[torch.Tensor]:
    """`decode` of every path, taking unchanged files from the images kept in this process."""
    keys = [(path, size, interpolation, draft_size) for path in paths]
    stats = [file_stat(path) for path in paths]
    todo = [key for key, stat in zip(keys, stats, strict=True) if _kept.get(key, [None])[0] != stat]
    if len(todo) < len(keys):
        log.info("%d decoded images reused from an earlier job", len(keys) - len(todo))
    # PIL releases the GIL while decoding and resizing, so threads decode in parallel.
    with ThreadPoolExecutor(threads or os.cpu_count()) as pool:
        images = pool.map(lambda key: decode(*key), todo)
        fresh = dict(zip(todo, images, strict=True))
    for key, stat in zip(keys, stats, strict=True):
        if key in fresh:
            _kept[key] = (stat, fresh[key])
    _recent.append(set(keys))
    live = set().union(*_recent)
    for key in [key for key in _kept if key not in live]:
        del _kept[key]
    return [_kept[key][1] for key in keys]


def file_stat(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def estimated_cache_bytes(num_images: int, size: int) -> int:
    """Rough memory of a cache of `num_images` photos (4:3) at shorter side `size`."""
    return num_images * size * (size * 4 // 3) * 3
