"""LightningDataModule for a folder of labelled images: train, val and optionally test splits.

The layout is found from what `data_dir` holds (`train/` + `val/` folders, one folder of
class folders, or a CSV of paths and labels); `src.data.splits` decides which image goes to
which split. The class names (and so the number of outputs of the model) are the labels.
"""

import logging
import multiprocessing
import os
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, default_collate

from src.data.splits import LabelledImages, Splits, SplitSettings, build_splits, image_split
from src.data.transforms import Augment, Preprocessing, build_transform
from src.data.validation import report_files
from src.errors import UserError

log = logging.getLogger(__name__)


class ImageFolderDataModule(LightningDataModule):
    """Train, val and (when there is one) test loaders over the images of `data_dir`.

    Args:
        data_dir: folder holding `train/` and `val/` (and optionally `test/`) class folders,
            or one folder of class folders, or the images `labels_csv` lists. Relative
            paths are taken from the directory the run was started in.
        batch_size: images per optimisation step (the tutorial uses 4).
        num_workers: loader worker processes; `null` picks by machine: on GPU machines every
            CPU core (shared among the GPUs of the node), on CPU-only ones none when images
            are cached, else one per core, at most 4 (see `default_num_workers`).
        download: fetch `download_url` when `data_dir` does not exist.
        download_url: a zip holding one top-level folder with `train/` and `val/`.
        tree_sha256: checksum of the extracted folder (`src.data.download.tree_sha256`),
            `null` to skip the check.
        augment: the training augmentation (`conf/augment`; `None`: the tutorial's).
        preprocessing: what the backbone's weights expect (`Preprocessing` fields, from
            `src.models.backbone.weights_preprocessing`; `src.train` passes them); `None`:
            ImageNet's statistics, 224-pixel crops of 256. The five keys below override it.
        image_size: side of the square crop fed to the network (null: the weights').
        resize_size: evaluation resizes the shorter side to this before the crop (null: the
            weights' crop fraction of `image_size`).
        mean, std: per-channel normalisation (null: the weights').
        interpolation: `bilinear`, `bicubic` or `nearest` for every resize (null: the
            weights').
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
        labels_csv: a CSV with columns `path,label` (and optionally `split`), paths
            relative to `data_dir`, instead of class folders.
        val_fraction / test_fraction: shares of the whole dataset that go to val and test
            when the layout does not say (one folder, a CSV without a split column).
        split_seed: seeds those splits and the folds, independently of the training seed.
        num_folds / fold: with `fold` set, train and val are pooled and fold `fold` of a
            stratified `num_folds`-fold split is val (test stays out of every fold).
        splits_file: a `splits.csv` of an earlier run to use as it is (`src.train` passes
            the run directory's own when resuming in place), instead of the above.
        sampler: `null` shuffles the training images; `balanced` draws every class equally
            often (`src.data.balance.balanced_sampler`).
    """

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 4,
        num_workers: int | None = None,
        download: bool = False,
        download_url: str | None = None,
        tree_sha256: str | None = None,
        augment: Augment | None = None,
        preprocessing: dict | None = None,
        image_size: int | None = None,
        resize_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        interpolation: str | None = None,
        pin_memory: bool | None = None,
        cache_images: bool = False,
        cache_max_gb: float = 4.0,
        cache_features: bool = False,
        skip_bad_images: bool = False,
        labels_csv: str | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        num_folds: int = 5,
        fold: int | None = None,
        splits_file: str | Path | None = None,
        sampler: str | None = None,
        jpeg_draft: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"Invalid data.batch_size={batch_size!r}: it must be an integer >= 1.")
        if sampler not in (None, "balanced"):
            raise UserError(f"Invalid data.sampler={sampler!r}: use null (shuffle) or balanced.")
        if num_workers is not None and num_workers < 0:
            raise UserError(f"Invalid data.num_workers={num_workers}: use null or 0 or more.")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.batch_size = batch_size
        self.num_workers = num_workers  # None: chosen when the loaders are made
        self.download = download
        self.download_url = download_url
        self.tree_sha256 = tree_sha256
        self.preprocessing = Preprocessing.resolve(
            preprocessing, image_size=image_size, resize_size=resize_size, mean=mean, std=std,
            interpolation=interpolation,
        )  # fmt: skip
        self.augment = augment or Augment()
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.cache_images = cache_images
        self.cache_max_gb = cache_max_gb
        self.cache_features = cache_features
        self.draft_size = self.preprocessing.resize_size if jpeg_draft else None
        self.split_settings = SplitSettings(
            labels_csv, val_fraction, test_fraction, split_seed, num_folds, fold
        )
        self.splits_file = splits_file
        self.splits: Splits | None = None
        # LabelledImages, or their DecodedImageCache (src.data.image_cache).
        self.train_set = self.val_set = self.test_set = None
        self.features: dict[str, Dataset] = {}
        self.skip_bad_images = skip_bad_images
        self.skipped_images: list[str] = []
        self.sampler = sampler

    def prepare_data(self) -> None:
        """Download the data once (Lightning calls this on one process per node)."""
        # A CSV names its own images; the tutorial's zip would not hold them.
        if self.data_dir.exists() or self.split_settings.labels_csv:
            return
        if not self.download or not self.download_url:
            raise UserError(
                f"Data folder not found: {self.data_dir}\n"
                "Point data.data_dir at a folder with train/ and val/ sub-folders "
                "(one sub-folder per class) or at one folder of class folders, or set "
                "data.download=true to fetch the tutorial's ants-vs-bees dataset."
            )
        from src.data.download import download_image_folder

        download_image_folder(self.data_dir, self.download_url, self.tree_sha256)

    def setup(self, stage: str | None = None) -> None:
        """Build the split (logged with its counts per class) and check every image once."""
        if self.train_set is not None:
            return
        self.splits = build_splits(self.data_dir, self.split_settings, self.splits_file)
        log.info("%s", self.splits.describe())
        evaluation = self.preprocessing.eval_transform()
        # Cached features must not depend on random augmentation.
        training = evaluation if self.cache_features else self.train_transform()
        transforms = {"train": training, "val": evaluation, "test": evaluation}
        sets, checks = {}, []
        for split in self.splits.names():
            sets[split], check = image_split(self.splits, split, transforms[split], self.draft_size)
            checks.append(check)
        self.skipped_images = report_files(checks, self.skip_bad_images)
        if self.cache_images:
            sets = {split: self._decoded(dataset) for split, dataset in sets.items()}
        self.train_set, self.val_set = sets["train"], sets["val"]
        self.test_set = sets.get("test")

    def train_transform(self):
        """The training augmentation and normalisation of this data."""
        return build_transform(self.preprocessing, self.augment)

    def _decoded(self, folder: LabelledImages):
        from src.data.image_cache import DecodedImageCache, estimated_cache_bytes

        size = self.preprocessing.resize_size
        estimate = estimated_cache_bytes(len(folder), size)
        if estimate > self.cache_max_gb * 1e9:
            log.warning(
                "Not caching decoded images of %s: about %.1f GB > data.cache_max_gb=%s. "
                "Raise data.cache_max_gb if the memory is there.",
                folder.root,
                estimate / 1e9,
                self.cache_max_gb,
            )
            return folder
        interpolation = self.preprocessing.interpolation_mode
        return DecodedImageCache(folder, size, interpolation, draft_size=self.draft_size)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (sorted folder names or labels), after `setup()`."""
        if self.train_set is None:
            self.setup()
        return list(self.train_set.classes)

    def loss_weights(self, setting) -> list[float] | None:
        """`model.class_weights` as one weight per class (`balanced`: from the training
        counts, see `src.data.balance`), or None."""
        if setting is None:
            return None
        from src.data.balance import loss_weights

        return loss_weights(setting, self.train_set.targets, self.class_names)

    def train_dataloader(self) -> DataLoader:
        sampler = None
        if self.sampler == "balanced":
            from src.data.balance import balanced_sampler

            sampler = balanced_sampler(self.train_set.targets, len(self.class_names))
        if "train" in self.features:  # the same images, in the same order
            features = self.features["train"]
            return self._loader(features, shuffle=sampler is None, workers=False, sampler=sampler)
        mix = self.augment.mix_batches(len(self.class_names))
        collate = None if mix is None else partial(mixed_collate, mix)
        return self._loader(self.train_set, shuffle=sampler is None, sampler=sampler,
                            collate_fn=collate)  # fmt: skip

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

    def test_dataloader(self) -> DataLoader:
        """Every test image once (sharded without repeats under DDP, as for validation)."""
        if self.test_set is None:
            raise UserError(f"The dataset in {self.data_dir} has no test split to test on.")
        return self._loader(self.test_set, shuffle=False, sampler=unpadded_shard(self.test_set))

    def use_features(self, train: Dataset | None = None, val: Dataset | None = None) -> None:
        """Serve these (backbone features, label) datasets instead of the images from now on
        (`None`: keep serving that split's images)."""
        given = {"train": train, "val": val}
        self.features = {split: data for split, data in given.items() if data is not None}

    def use_images(self) -> None:
        """Serve the images again (the backbone trains now), with the train augmentation
        that `cache_features` had switched off."""
        self.features = {}
        if self.cache_features and self.train_set is not None:
            self.train_set.transform = self.train_transform()

    def _loader(self, dataset, shuffle: bool, workers=True, sampler=None, collate_fn=None):
        # Features are tensors already in memory: worker processes would only add cost.
        num_workers = self.workers() if workers else 0
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=collate_fn,
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
        cached = not isinstance(self.train_set, LabelledImages)  # a DecodedImageCache
        processes = self.trainer.num_devices if self.trainer is not None else 1
        return default_num_workers(cached, processes)


def mixed_collate(mix, batch):
    """A training batch, its images and labels mixed by `mix` (MixUp or CutMix); a function
    of the module, so that loader workers started with `spawn` can unpickle it."""
    return mix(*default_collate(batch))


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


def usable_cores() -> int:
    """The CPU cores this process may run on (a SLURM job or `taskset` may allow fewer
    than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


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
    cores = usable_cores()
    if torch.cuda.is_available():
        return max(1, cores // max(1, processes_per_node))
    return 0 if cached else min(cores, 4)
