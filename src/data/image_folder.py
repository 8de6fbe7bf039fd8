"""LightningDataModule for a folder of labelled images (`src.data.layouts` finds them,
`src.data.splits` splits them), with the download of the tutorial's ants-vs-bees zip and what
it does for class imbalance (`balanced_sampler`, `loss_weights`)."""

import hashlib
import logging
import multiprocessing
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler, default_collate
from torchvision.datasets.utils import download_and_extract_archive

from src.data.images import load_rgb
from src.data.splits import Splits, SplitSettings, build_splits, image_split
from src.data.transforms import Augment, Preprocessing, build_transform
from src.data.validation import cache_decoded, decode_into, report_files
from src.errors import UserError

log = logging.getLogger(__name__)


class ImageFolderDataModule(LightningDataModule):
    """Train, val and (when there is one) test loaders over the images of `data_dir`.

    The arguments are the `data.*` keys, described in `conf/data/hymenoptera.yaml`, and three
    that `src.train` passes: `augment` (`conf/augment`; `None`: the tutorial's), `preprocessing`
    (what the backbone's weights expect, as `Preprocessing` fields; `None`: ImageNet's) and
    `splits_file` (a run's `splits.csv`, used as it is when resuming). The keys not named below
    are `Preprocessing` fields (`image_size`, `resize_size`, `mean`, `std`, `interpolation`:
    not None, they override `preprocessing`) and `SplitSettings` (`labels_csv` to `fold`).
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
        pin_memory: bool | None = None,
        cache_images: bool = False,
        cache_max_gb: float = 4.0,
        cache_features: bool = False,
        skip_bad_images: bool = False,
        splits_file: str | Path | None = None,
        sampler: str | None = None,
        jpeg_draft: bool = False,
        **settings,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"Invalid data.batch_size={batch_size!r}: it must be an integer >= 1.")
        if sampler not in (None, "balanced"):
            raise UserError(f"Invalid data.sampler={sampler!r}: use null (shuffle) or balanced.")
        if num_workers is not None and num_workers < 0:
            raise UserError(f"Invalid data.num_workers={num_workers}: use null or 0 or more.")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.batch_size, self.num_workers, self.sampler = batch_size, num_workers, sampler
        self.download, self.download_url, self.tree_sha256 = download, download_url, tree_sha256
        given = Preprocessing.fields_of(settings)
        self.preprocessing = Preprocessing.resolve(preprocessing, **given)
        self.augment = augment or Augment()
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.cache_images, self.cache_max_gb = cache_images, cache_max_gb
        self.cache_features, self.skip_bad_images = cache_features, skip_bad_images
        self.draft_size = self.preprocessing.resize_size if jpeg_draft else None
        self.split_settings = SplitSettings(**{k: v for k, v in settings.items() if k not in given})
        self.splits_file = splits_file
        self.splits: Splits | None = None
        self.train_set = self.val_set = self.test_set = None  # LabelledImages
        self.cached_splits: list[str] = []  # those read from memory (`cache_decoded`)
        self.features: dict[str, Dataset] = {}
        self.skipped_images: list[str] = []

    def prepare_data(self) -> None:
        """Download the data once (Lightning calls this on one process per node): the zip at
        `download_url`, holding one top-level folder, becomes `data_dir`. It is extracted in a
        temporary folder beside `data_dir`, so an interrupted download never leaves a
        half-filled `data_dir` that later runs would mistake for data. A folder that is still
        missing then is named by `setup`."""
        # A CSV names its own images; the tutorial's zip would not hold them.
        missing = not self.data_dir.exists() and not self.split_settings.labels_csv
        if not (missing and self.download and self.download_url):
            return
        url, data_dir = self.download_url, self.data_dir
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=data_dir.parent, prefix=".download-") as tmp:
            try:
                download_and_extract_archive(url, download_root=tmp, remove_finished=True)
            except OSError as err:  # urllib's URLError is one
                raise UserError(
                    f"Could not download the dataset from {url} ({err}).\n"
                    f"Without internet access, download the zip elsewhere, unzip it so that "
                    f"{data_dir}/train and {data_dir}/val exist, or point data.data_dir at a copy."
                ) from err
            folders = [p for p in Path(tmp).iterdir() if p.is_dir() and not p.name.startswith("__")]
            if len(folders) != 1:
                raise UserError(f"Expected one top-level folder in {url}, found {len(folders)}.")
            actual = tree_sha256(folders[0]) if self.tree_sha256 is not None else None
            if actual != self.tree_sha256:
                raise UserError(
                    f"The data downloaded from {url} does not match its checksum "
                    f"(tree SHA-256 {actual}, expected {self.tree_sha256}). "
                    "The download may be corrupt; delete it and run again."
                )
            shutil.move(str(folders[0]), data_dir)

    def setup(self, stage: str | None = None) -> None:
        """Build the split (logged with its counts per class) and check every image once;
        with `cache_images`, the check's decode fills the cache."""
        if self.train_set is not None:
            return
        self.splits = build_splits(self.data_dir, self.split_settings, self.splits_file)
        log.info("%s", self.splits.describe())
        pre = self.preprocessing
        evaluation = pre.eval_transform()
        # Cached features must not depend on random augmentation.
        training = evaluation if self.cache_features else build_transform(pre, self.augment)
        size, mode, draft = pre.resize_size, pre.interpolation_mode, self.draft_size
        names = self.splits.names()
        decoded = {split: {} for split in names if self.cache_images and self._cache_fits(split)}
        sets, checks = {}, []
        for split in names:
            images = decoded.get(split)
            read = load_rgb if images is None else partial(decode_into, images, size, mode, draft)
            transform = training if split == "train" else evaluation
            sets[split], check = image_split(self.splits, split, transform, draft, read)
            checks.append(check)
        self.skipped_images = report_files(checks, self.skip_bad_images)
        for split, images in decoded.items():
            cache_decoded(sets[split], size, mode, draft, images)
        self.cached_splits = list(decoded)
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets.get("test")

    def _cache_fits(self, split: str) -> bool:
        """Whether the decoded images of `split` stay under `cache_max_gb` (else a warning)."""
        size = self.preprocessing.resize_size
        images = sum(row.split == split for row in self.splits.rows)
        gigabytes = images * size * (size * 4 // 3) * 3 / 1e9  # as uint8 photos of 4:3
        if gigabytes > self.cache_max_gb:
            log.warning(
                f"Not caching decoded images of the {split} split: about {gigabytes:.1f} GB > "
                f"data.cache_max_gb={self.cache_max_gb}. Raise it if the memory is there."
            )
        return gigabytes <= self.cache_max_gb

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (sorted folder names or labels), after `setup()`."""
        if self.train_set is None:
            self.setup()
        return list(self.train_set.classes)

    def loss_weights(self, setting) -> list[float] | None:
        """`model.class_weights` as one weight per class, or None (see `loss_weights`)."""
        return loss_weights(setting, self.train_set.targets, self.class_names)

    def train_dataloader(self) -> DataLoader:
        mix = None if "train" in self.features else self.augment.mix_batches(len(self.class_names))
        return self._loader("train", None if mix is None else partial(mixed_collate, mix))

    def val_dataloader(self) -> DataLoader:
        """Every validation image once (under DDP, see `_loader`)."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Every test image once (sharded without repeats under DDP, as for validation)."""
        if self.test_set is None:
            raise UserError(f"The dataset in {self.data_dir} has no test split to test on.")
        return self._loader("test")

    def use_features(self, train: Dataset | None = None, val: Dataset | None = None) -> None:
        """Serve these (backbone features, label) datasets instead of the images from now on
        (`None`: keep serving that split's images)."""
        self.features = {k: v for k, v in {"train": train, "val": val}.items() if v is not None}

    def use_images(self) -> None:
        """Serve the images again (the backbone trains now), with the train augmentation
        that `cache_features` had switched off."""
        self.features = {}
        if self.cache_features and self.train_set is not None:
            self.train_set.transform = build_transform(self.preprocessing, self.augment)

    def _loader(self, split: str, collate_fn=None) -> DataLoader:
        # Features (the same images, in the same order) are tensors already in memory:
        # worker processes would only add cost.
        features = split in self.features
        dataset = self.features[split] if features else getattr(self, f"{split}_set")
        sampler, dist = None, torch.distributed
        if split == "train" and self.sampler == "balanced":
            sampler = balanced_sampler(self.train_set.targets, len(self.class_names))
        elif split != "train" and dist.is_available() and dist.is_initialized():
            # Lightning's own sampler pads the split with repeated images so that every process
            # gets as many, which `val/acc` would count twice. These shards differ by one image
            # instead (safe in evaluation: no gradients are synchronised); the metrics then sum
            # over processes.
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        num_workers = 0 if features else self.workers()
        # This platform's default ("fork" on Linux, "spawn" on macOS), said explicitly: inside
        # the workers of hydra/launcher=joblib the default is loky's own method, with which
        # starting loader workers fails.
        start = multiprocessing.get_all_start_methods()[0] if num_workers else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=split == "train" and sampler is None,
            sampler=sampler,
            collate_fn=collate_fn,
            num_workers=num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=num_workers > 0,
            multiprocessing_context=start,
        )

    def workers(self) -> int:
        """`num_workers`, or for `null` the machine's choice, made when the loaders are: by
        then it is known whether the images were cached and, from the Trainer, how many
        training processes share the node's cores."""
        if self.num_workers is not None:
            return self.num_workers
        processes = self.trainer.num_devices if self.trainer is not None else 1
        return default_num_workers("train" in self.cached_splits, processes)


def mixed_collate(mix, batch):
    """A training batch, its images and labels mixed by `mix` (MixUp or CutMix); a function
    of the module, so that loader workers started with `spawn` can unpickle it."""
    return mix(*default_collate(batch))


def usable_cores() -> int:
    """The CPU cores this process may run on (a SLURM job or `taskset` may allow fewer than
    the machine has; macOS and Windows cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_num_workers(cached: bool, processes_per_node: int = 1) -> int:
    """Loader processes for `data.num_workers=null` (see docs/speed.md): with a GPU every core,
    shared among the node's training processes; without one, none for `cached` images (the
    main process keeps up alone, and workers would take cycles from training), else one per
    core, at most 4."""
    cores = usable_cores()
    if torch.cuda.is_available():
        return max(1, cores // max(1, processes_per_node))
    return 0 if cached else min(cores, 4)


def tree_sha256(root: Path) -> str:
    """SHA-256 over the sorted relative paths and contents of every file under `root`: the
    zip's page gives no checksum, and this also catches a truncated or partial extraction."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def balanced_sampler(targets: list[int], num_classes: int) -> WeightedRandomSampler:
    """Draw each class equally often: image i with probability 1 / (images of its class).

    An epoch keeps its length (one draw per training image, with replacement), so minority
    images repeat within an epoch and majority images are left out. The draws come from
    torch's global generator, which `SeedEachEpoch` seeds from (seed, epoch) before each
    epoch: the same seed draws the same images, also in a resumed run.
    """
    labels = torch.as_tensor(targets)
    weights = 1.0 / torch.bincount(labels, minlength=num_classes).double()[labels]
    return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True)


def loss_weights(setting, targets: list[int], class_names: list[str]) -> list[float] | None:
    """The training loss's class weights for `model.class_weights`: for `balanced`, n_images /
    (n_classes * images of the class), scikit-learn's `compute_class_weight("balanced")`, so
    that every class adds the same total weight to an epoch; a list gives one weight per class
    in `class_names` order; `null` none."""
    if setting is None:
        return None
    if setting == "balanced":
        import numpy as np
        from sklearn.utils.class_weight import compute_class_weight

        counts = torch.bincount(torch.as_tensor(targets), minlength=len(class_names)).tolist()
        empty = [name for name, count in zip(class_names, counts, strict=True) if count == 0]
        if empty:
            raise UserError(
                f"model.class_weights=balanced needs training images of every class; "
                f"none of {empty}."
            )
        classes = np.arange(len(class_names))
        return compute_class_weight("balanced", classes=classes, y=np.asarray(targets)).tolist()
    if isinstance(setting, str) or len(setting) != len(class_names):
        raise UserError(
            f"Invalid model.class_weights={setting!r}: use balanced, null, or one weight per "
            f"class ({len(class_names)}: {', '.join(class_names)}), e.g. "
            f"model.class_weights=[{','.join(['1.0'] * len(class_names))}]."
        )
    return [float(w) for w in setting]
