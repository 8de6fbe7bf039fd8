"""Decode every image of a split once and keep it in memory as a small uint8 tensor.

The tutorial decodes each JPEG again in every epoch; on a 2-core machine that decoding
competes with training for the same cores. Images are stored resized so that their shorter
side is `size` (the validation resize, 256), so validation sees exactly the tutorial's
pixels and training crops come from a 256-pixel image instead of the original.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms.v2 import functional as F


class DecodedImageCache(Dataset):
    """An ImageFolder whose images were decoded once; `transform` still runs per access.

    Keeps `classes`, `class_to_idx`, `samples` and `targets` of the wrapped folder.
    """

    def __init__(self, folder: ImageFolder, size: int, threads: int | None = None) -> None:
        self.classes, self.class_to_idx = folder.classes, folder.class_to_idx
        self.samples, self.targets = folder.samples, folder.targets
        self.transform = folder.transform

        def decode(path: str) -> torch.Tensor:
            return F.pil_to_tensor(F.resize(folder.loader(path), size, antialias=True))

        # PIL releases the GIL while decoding, so threads decode in parallel.
        with ThreadPoolExecutor(threads or os.cpu_count()) as pool:
            self.images = list(pool.map(decode, [path for path, _ in self.samples]))

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


def estimated_cache_bytes(num_images: int, size: int) -> int:
    """Rough memory of a cache of `num_images` photos (4:3) at shorter side `size`."""
    return num_images * size * (size * 4 // 3) * 3
