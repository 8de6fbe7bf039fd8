"""The one split builder: which image goes to which split (`build_splits`, written to a run's
`splits.csv`), and the dataset of one split (`image_split`)."""

import csv
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torchvision.datasets import DatasetFolder

from src.data.images import load_rgb
from src.data.layouts import SPLIT_NAMES, Row, csv_rows, find_rows
from src.data.validation import check_images
from src.errors import UserError
from src.files import atomic_write

SPLITS_FILE = "splits.csv"


@dataclass(frozen=True)
class SplitSettings:
    """The data.* keys that decide a split, checked when made (a `UserError` names the key)."""

    labels_csv: str | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    split_seed: int = 0
    num_folds: int = 5
    fold: int | None = None

    def __post_init__(self) -> None:
        val, test = self.val_fraction, self.test_fraction
        num_folds, fold = self.num_folds, self.fold
        if not 0 < val < 1:
            raise UserError(f"Invalid data.val_fraction={val}: it must be in (0, 1).")
        if not 0 <= test < 1 or val + test >= 1:
            raise UserError(
                f"Invalid data.test_fraction={test}: it must be in [0, 1) and leave images "
                f"for training (data.val_fraction + data.test_fraction = {val + test} must "
                "be below 1)."
            )
        if not isinstance(num_folds, int) or isinstance(num_folds, bool) or num_folds < 2:
            raise UserError(f"Invalid data.num_folds={num_folds}: it must be an integer >= 2.")
        if fold is not None and (isinstance(fold, bool) or fold not in range(num_folds)):
            raise UserError(
                f"Invalid data.fold={fold}: with data.num_folds={num_folds} it must be one of "
                f"0..{num_folds - 1} (or null for no cross-validation)."
            )


@dataclass
class Splits:
    """Every labelled image of a dataset with its split; paths relative to `data_dir`."""

    data_dir: Path
    class_names: list[str]
    rows: list[Row]
    how: str  # how the split was made, for the log and messages

    def names(self) -> list[str]:
        """The splits that hold images, in the order train, val, test."""
        return [name for name in SPLIT_NAMES if any(row.split == name for row in self.rows)]

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: images}}, every class listed in every split."""
        counts = {name: dict.fromkeys(self.class_names, 0) for name in self.names()}
        for row in self.rows:
            counts[row.split][row.label] += 1
        return counts

    def describe(self) -> str:
        """A few lines for the log: how the split was made, and its images per class."""
        counts, width = self.counts(), max(len(name) for name in [*self.class_names, "class"])
        lines = [f"Split: {self.how}", f"  {'class':<{width}}" + "".join(f"{n:>7}" for n in counts)]
        for label in self.class_names:
            lines.append(f"  {label:<{width}}" + "".join(f"{c[label]:>7}" for c in counts.values()))
        return "\n".join(lines)

    def write(self, path: str | Path) -> None:
        """Save as CSV (path,label,split): `data.labels_csv` and `build_splits` read it back."""
        with atomic_write(path) as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(Row._fields)
            writer.writerows(sorted(self.rows, key=lambda r: (SPLIT_NAMES.index(r.split), r.path)))


def build_splits(
    data_dir: str | Path,
    settings: SplitSettings | None = None,
    splits_file: str | Path | None = None,
    wanted=SPLIT_NAMES,
) -> Splits:
    """The split of the dataset in `data_dir`.

    `splits_file` (a run's `splits.csv`, which resume and evaluation read back) is used as it
    is. Otherwise the layout's own splits (`src.data.layouts`) are kept and the missing ones
    made with scikit-learn, stratified by class and seeded by `split_seed` alone (changing
    the training `seed` keeps the split): a test split by `test_fraction`, then val by
    `val_fraction`, or fold `fold` of `num_folds`. `wanted` limits which split folders are
    read, for a caller that needs one split only.
    """
    data_dir = Path(data_dir).expanduser()
    if splits_file is not None:
        rows, _, _ = csv_rows(Path(splits_file), data_dir)
        if any(row.split is None for row in rows):
            raise UserError(f"{splits_file} has no split column; it is not a splits.csv.")
        return Splits(data_dir, sorted({r.label for r in rows}), rows, f"as in {splits_file}")
    s = settings or SplitSettings()
    folders = SPLIT_NAMES if s.fold is not None else wanted  # a fold is cut from train and val
    rows, source, given = find_rows(data_dir, s.labels_csv, folders)
    rows = sorted(rows)  # by path: the split must not depend on the listing order
    how = f"{source} ({data_dir})"
    if given:
        if s.test_fraction:
            raise UserError(
                f"data.test_fraction={s.test_fraction} splits a dataset without splits, but "
                f"this one ({source}) already says which split each image is in. Put "
                "the test images in a test/ folder (or split=test rows) instead, or set "
                "data.test_fraction=0."
            )
        for name in sorted({"train", "val"} & set(wanted) - {r.split for r in rows}):
            raise UserError(
                f"{source} has no {name} images: its split column needs rows with "
                f"split={name} (or leave the split column out to split by data.val_fraction)."
            )
    else:
        rows = assign_by_fraction(rows, s.val_fraction, s.test_fraction, s.split_seed, s.fold)
        how += f", stratified by split_seed {s.split_seed}: test_fraction {s.test_fraction}"
        how += "" if s.fold is not None else f", val_fraction {s.val_fraction}"
    if s.fold is not None:
        rows = assign_fold(rows, s.num_folds, s.fold, s.split_seed)
        how += f"; val = fold {s.fold} of {s.num_folds} (split_seed {s.split_seed})"
    splits = Splits(data_dir, sorted({r.label for r in rows}), rows, how)
    counts = splits.counts()  # stop when a class has no image in some split
    for label in splits.class_names:
        if empty := [name for name in counts if counts[name][label] == 0]:
            per_split = ", ".join(f"{name} {counts[name][label]}" for name in counts)
            if given and (s.fold is None or empty == ["test"]):
                fix = f"give it images in every split in {source}"
            else:  # each class's share of a split is rounded, and can round to none
                fix = "add images of it, or change data.val_fraction or data.test_fraction"
            raise UserError(
                f"Class {label!r} has no image in the {' and '.join(empty)} split ({per_split}). "
                f"Every class needs images in every split: {fix}."
            )
    return splits


def assign_by_fraction(rows, val_fraction, test_fraction, seed, fold) -> list[Row]:
    """Stratified test and val splits of rows that have none (val from the folds instead
    with a `fold`); the rest is train. Both fractions are of the whole dataset."""
    from sklearn.model_selection import train_test_split

    def cut(pool: list[Row], fraction: float, name: str):
        count = max(1, round(fraction * len(rows)))  # an int: no float rounding in sklearn
        try:
            kept, taken = train_test_split(
                pool, test_size=count, random_state=seed, stratify=[r.label for r in pool]
            )
        except ValueError as err:  # too few images of a class, or fewer than classes
            raise UserError(
                f"data.{name}_fraction={fraction} cannot make a stratified {name} split of "
                f"the images per class {class_counts(pool)} ({err}). Add images, or change "
                f"data.{name}_fraction."
            ) from err
        return kept, [r._replace(split=name) for r in taken]

    pool, test, val = rows, [], []
    if test_fraction:
        pool, test = cut(pool, test_fraction, "test")
    if fold is None:
        pool, val = cut(pool, val_fraction, "val")
    return [r._replace(split="train") for r in pool] + val + test


def assign_fold(rows: list[Row], num_folds: int, fold: int, seed: int) -> list[Row]:
    """Train and val rows re-split: fold `fold` of a stratified `num_folds`-fold split is val.
    Test rows stay as they are, out of every fold."""
    from sklearn.model_selection import StratifiedKFold

    pool = sorted(r for r in rows if r.split != "test")
    if few := {label: n for label, n in class_counts(pool).items() if n < num_folds}:
        raise UserError(
            f"data.num_folds={num_folds} needs at least {num_folds} images of every class "
            f"outside the test split, but {few} have fewer. Lower data.num_folds, or add "
            "images."
        )
    folds = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    _, val_index = list(folds.split(pool, [r.label for r in pool]))[fold]
    val = set(val_index.tolist())
    refolded = [r._replace(split="val" if i in val else "train") for i, r in enumerate(pool)]
    return refolded + [r for r in rows if r.split == "test"]


def class_counts(rows: list[Row]) -> dict[str, int]:
    return dict(sorted(Counter(row.label for row in rows).items()))


class LabelledImages(DatasetFolder):
    """torchvision's DatasetFolder over the given (path, class index) samples, ordered as
    ImageFolder orders them (by class, then path), read through `load_rgb` with `draft_size`
    (`data.jpeg_draft`)."""

    def __init__(self, root: Path, samples, classes, transform=None, draft_size=None) -> None:
        self._given = list(classes), sorted(samples, key=lambda s: (s[1], s[0]))
        super().__init__(root, partial(load_rgb, draft_size=draft_size), transform=transform)

    def find_classes(self, directory):
        return self._given[0], {name: index for index, name in enumerate(self._given[0])}

    def make_dataset(self, directory, class_to_idx, **kwargs):
        return self._given[1]


def image_split(splits: Splits, split: str, transform, draft_size=None, read=load_rgb):
    """The decodable images of `split` as a `LabelledImages`, and {path: why} of the others
    (`read` decodes them), on which `src.data.validation.report_files` stops or skips."""
    if split not in splits.names():
        raise UserError(
            f"The dataset in {splits.data_dir} has no {split} split (it has "
            f"{', '.join(splits.names()) or 'none'}; split: {splits.how})."
        )
    labels = {str(splits.data_dir / r.path): r.label for r in splits.rows if r.split == split}
    verdicts = check_images(list(labels), read)
    index = {name: i for i, name in enumerate(splits.class_names)}
    samples = [(path, index[label]) for path, label in labels.items() if verdicts[path] is None]
    dataset = LabelledImages(splits.data_dir, samples, splits.class_names, transform, draft_size)
    return dataset, {path: why for path, why in verdicts.items() if why is not None}


def require_classes(dataset: LabelledImages, class_names: list[str], trained_on: str) -> None:
    """Stop unless `dataset` holds exactly `class_names`, in the same (label) order."""
    if list(dataset.classes) != list(class_names):
        raise UserError(
            f"{dataset.root} holds classes {dataset.classes}, but {trained_on} has "
            f"{list(class_names)}. Both need the same class sub-folders."
        )
