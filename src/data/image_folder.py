"""LightningDataModule for an ImageFolder tree with `train/` and `val/` splits.

The class names (and so the number of outputs of the model) come from the sub-folders of
`train/`; `val/` must hold the same classes.
"""

import logging
import multiprocessing
import os
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from src.data.download import download_image_folder
from src.data.image_cache import DecodedImageCache, estimated_cache_bytes
from src.data.splits import image_split
from src.data.transforms import train_transform, val_transform
from src.data.validation import report_files
from src.errors import UserError

log = logging.getLogger(__name__)


class ImageFolderDataModule(LightningDataModule):
    """Train/val loaders over `data_dir/{train,val}/<class_name>/*.jpg`.

    Args:
        data_dir: folder holding `train/` and `val/`. Relative paths are taken from the
            directory the run was started in.
        batch_size: images per optimisation step (the tutorial uses 4).
        num_workers: loader worker processes; `null` picks by machine: on GPU machines every
            CPU core (shared among the GPUs of the node), on CPU-only ones none when images
            are cached, else one per core, at most 4 (see `default_num_workers`).
        download: fetch `download_url` when `data_dir` does not exist.
        download_url: a zip holding one top-level folder with `train/` and `val/`.
        tree_sha256: checksum of the extracted folder (`src.data.download.tree_sha256`),
            `null` to skip the check.
        image_size: side of the square crop fed to the network.
        resize_size: validation images are resized to this shorter side before the crop.
        pin_memory: pin host memory for faster copies; `null` pins when CUDA is available.
        cache_images: decode every image once and keep it in memory (see
            `src.data.image_cache`); skipped with a warning above `cache_max_gb`.
        cache_max_gb: the largest decoded-image cache to build.
        jpeg_draft: decode large JPEGs at a reduced scale that still covers `resize_size`
            (see `src.data.images.load_rgb`); every command reading this run's images
            (eval, predict, figures) then does the same.
        cache_features: for a frozen backbone only: switch off train augmentation, so the
            backbone's features can be computed once (by the `CacheFeatures` callback,
            `src.training.feature_cache`) and the epochs train the head alone.
        skip_bad_images: train without images that cannot be decoded (listed in
            `skipped_images`) instead of stopping before training with their names.
    """

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 4,
        num_workers: int | None = None,
        download: bool = False,
        download_url: str | None = None,
        tree_sha256: str | None = None,
        image_size: int = 224,
        resize_size: int = 256,
        pin_memory: bool | None = None,
        cache_images: bool = False,
        cache_max_gb: float = 4.0,
        cache_features: bool = False,
        skip_bad_images: bool = False,
        jpeg_draft: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"data.batch_size must be at least 1, got {batch_size}.")
        if num_workers is not None and num_workers < 0:
            raise UserError(f"data.num_workers must be 0 or more, got {num_workers}.")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.batch_size = batch_size
        self.num_workers = num_workers  # None: chosen when the loaders are made
        self.download = download
        self.download_url = download_url
        self.tree_sha256 = tree_sha256
        self.image_size = image_size
        self.resize_size = resize_size
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.cache_images = cache_images
        self.cache_max_gb = cache_max_gb
        self.cache_features = cache_features
        self.draft_size = resize_size if jpeg_draft else None
        self.train_set: ImageFolder | DecodedImageCache | None = None
        self.val_set: ImageFolder | DecodedImageCache | None = None
        self.features: dict[str, Dataset] = {}
        self.skip_bad_images = skip_bad_images
        self.skipped_images: list[str] = []

    def prepare_data(self) -> None:
        """Download the data once (Lightning calls this on one process per node)."""
        if self.data_dir.exists():
            return
        if not self.download or not self.download_url:
            raise UserError(
                f"Data folder not found: {self.data_dir}\n"
                "Point data.data_dir at a folder with train/ and val/ sub-folders "
                "(one sub-folder per class), or set data.download=true to fetch the "
                "tutorial's ants-vs-bees dataset."
            )
        download_image_folder(self.data_dir, self.download_url, self.tree_sha256)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        evaluation = val_transform(self.image_size, self.resize_size)
        # Cached features must not depend on random augmentation.
        training = evaluation if self.cache_features else train_transform(self.image_size)
        train_set, train_check = image_split(self.data_dir, "train", training, self.draft_size)
        val_set, val_check = image_split(self.data_dir, "val", evaluation, self.draft_size)
        if val_set.classes != train_set.classes:
            raise UserError(
                f"train/ and val/ in {self.data_dir} hold different classes: "
                f"train has {train_set.classes}, val has {val_set.classes}. "
                "Both splits need the same class sub-folders."
            )
        self.skipped_images = report_files([train_check, val_check], self.skip_bad_images)
        if self.cache_images:
            train_set, val_set = self._decoded(train_set), self._decoded(val_set)
        self.train_set, self.val_set = train_set, val_set

    def _decoded(self, folder: ImageFolder) -> ImageFolder | DecodedImageCache:
        estimate = estimated_cache_bytes(len(folder), self.resize_size)
        if estimate > self.cache_max_gb * 1e9:
            log.warning(
                "Not caching decoded images of %s: about %.1f GB > data.cache_max_gb=%s. "
                "Raise data.cache_max_gb if the memory is there.",
                folder.root,
                estimate / 1e9,
                self.cache_max_gb,
            )
            return folder
        return DecodedImageCache(folder, size=self.resize_size, draft_size=self.draft_size)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (sorted folder names), after `setup()`."""
        if self.train_set is None:
            self.setup()
        return list(self.train_set.classes)

    def train_dataloader(self) -> DataLoader:
        if "train" in self.features:
            return self._loader(self.features["train"], shuffle=True, workers=False)
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Every validation image once; under DDP each process takes every n-th image.

        Lightning's default distributed sampler pads the split with repeated images so that
        every process gets the same number, which would count those images twice in
        `val/acc`. The unpadded sampler lets the shards differ by one image instead (safe in
        validation: no gradients are synchronised); the metrics then sum over processes.
        """
        if "val" in self.features:
            features = self.features["val"]
            return self._loader(
                features, shuffle=False, workers=False, sampler=unpadded_shard(features)
            )
        return self._loader(self.val_set, shuffle=False, sampler=unpadded_shard(self.val_set))

    def use_features(self, train: Dataset | None = None, val: Dataset | None = None) -> None:
        """Serve these (backbone features, label) datasets instead of the images from now on
        (`None`: keep serving that split's images)."""
        given = {"train": train, "val": val}
        self.features = {split: data for split, data in given.items() if data is not None}

    def _loader(self, dataset, shuffle: bool, workers: bool = True, sampler=None) -> DataLoader:
        # Features are tensors already in memory: worker processes would only add cost.
        num_workers = self.workers() if workers else 0
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=num_workers > 0,
            multiprocessing_context=platform_start_method() if num_workers > 0 else None,
        )

    def workers(self) -> int:
        """`num_workers`, or the machine's choice for `null`, made when the loaders are: by
        then it is known whether the images were cached (not above `cache_max_gb`) and, from
        the Trainer, how many training processes share the node's cores."""
        if self.num_workers is not None:
            return self.num_workers
        cached = isinstance(self.train_set, DecodedImageCache)
        processes = self.trainer.num_devices if self.trainer is not None else 1
        return default_num_workers(cached, processes)


def unpadded_shard(dataset):
    """This process's share of `dataset` without repeats under DDP; `None` in a single process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, shuffle=False)


def platform_start_method() -> str:
    """How loader workers start: this platform's default ("fork" on Linux, "spawn" on macOS).

    Said explicitly because the current default can be one torch cannot use: inside the
    worker processes of `hydra/launcher=joblib` it is loky's own method, and starting loader
    workers there fails.
    """
    return multiprocessing.get_all_start_methods()[0]


def default_num_workers(cached: bool, processes_per_node: int = 1) -> int:
    """Loader processes for `data.num_workers=null`.

    With a GPU, the CPU's only job is to feed it: every core of the node runs a loader
    worker, shared among the node's training processes (each worker keeps two batches in
    flight, PyTorch's default prefetch, so a 16-core machine has 32 batches queued).
    Without one, cropping and flipping an already-decoded image takes under a millisecond,
    so with `cached` images the main process keeps up alone, and worker processes would only
    take cycles from training on the same cores (measured: 7.7 s against 8.6 s per finetune
    epoch on 2 cores). Otherwise: one per core, at most 4.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        cores = os.cpu_count() or 1
    if torch.cuda.is_available():
        return max(1, cores // max(1, processes_per_node))
    return 0 if cached else min(cores, 4)
