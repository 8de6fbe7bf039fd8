"""Find the labelled images of a dataset, as rows of (path, label, split), from what
`data.data_dir` holds (see `LAYOUT`) or `data.labels_csv` lists; no image is decoded here."""

import csv
import logging
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from src.data.images import is_hidden, is_image_name
from src.errors import UserError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
LAYOUT = (
    "<data_dir>/train/<class>/<image> and <data_dir>/val/<class>/<image> (and optionally "
    "test/), or one folder of class folders <data_dir>/<class>/<image>, or a CSV of path,label "
    "(data.labels_csv)"
)


class Row(NamedTuple):
    """One labelled image: its path (relative to data_dir, so that a split survives the data
    folder moving), class label and split."""

    path: str
    label: str
    split: str | None  # None: one folder, or a CSV without a split column (src.data.splits)


def find_rows(data_dir: Path, labels_csv: str | Path | None, wanted=SPLIT_NAMES):
    """The labelled images of the dataset in `data_dir` (or listed by `labels_csv`), as (rows,
    source, has_splits): `source` says how they were found, for messages ("split folders", "one
    folder of class folders" or the CSV's path), and `has_splits` whether the layout itself
    says which split each image is in.

    With split folders only the `wanted` ones are read (`train/` and `val/` must exist when
    wanted, `test/` is optional); `src.eval` reads just the split it evaluates.
    """
    if labels_csv:
        return csv_rows(Path(labels_csv).expanduser(), data_dir)
    if data_dir.is_file():
        raise UserError(
            f"data.data_dir {data_dir} is a file, not a folder. Expected a folder laid out as "
            f"{LAYOUT} (unzip an archive first)."
        )
    if not data_dir.is_dir():
        raise UserError(
            f"Data folder not found: {data_dir}. Point data.data_dir at a folder laid out as "
            f"{LAYOUT} (the data may have moved), or set data.download=true to fetch the "
            "tutorial's ants-vs-bees dataset."
        )
    has_splits = any((data_dir / split).is_dir() for split in ("train", "val"))
    splits = [name for name in SPLIT_NAMES if name in wanted] if has_splits else [None]
    found = {}  # split -> (classes, rows, ignored)
    for split in splits:
        if (folder := data_dir / (split or "")).is_dir():
            found[split] = class_folder_rows(folder, data_dir, split)
        elif split != "test":
            raise UserError(
                f"Missing split folder {folder}. Expected {folder}/<class>/ with images (fix "
                f"data.data_dir); found {sorted(p.name for p in data_dir.iterdir())}."
            )
    first = next(iter(found), None)
    for split, (names, _, _) in found.items():
        if names != found[first][0]:
            raise UserError(
                f"{first}/ and {split}/ in {data_dir} hold different classes: {first} has "
                f"{found[first][0]}, {split} has {names}. Every split needs the same class "
                "sub-folders."
            )
    ignored = [path for _, _, files in found.values() for path in files]
    if ignored:  # once for the whole dataset
        log.info("Ignored %d file(s) that are not images: %s", len(ignored), ", ".join(ignored))
    source = "split folders" if has_splits else "one folder of class folders"
    return [row for _, rows, _ in found.values() for row in rows], source, has_splits


def class_folder_rows(folder: Path, data_dir: Path, split: str | None):
    """(class names, image rows, files that are not images) of a folder of class folders.

    Every sub-folder is a class, as for torchvision's ImageFolder, except hidden ones
    (.ipynb_checkpoints, .git, ...). Raises a `UserError` for a layout no classifier can train
    on: no class folders, a single one, or a class folder without images.
    """
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
    rows, ignored, empty = [], [str(p) for p in folder.iterdir() if p.is_file()], {}
    for name in classes:
        files = sorted(p for p in (folder / name).rglob("*") if p.is_file())
        images = [p for p in files if is_image_name(p)]
        rows += [Row(p.relative_to(data_dir).as_posix(), name, split) for p in images]
        ignored += [str(p) for p in files if not is_image_name(p)]
        if not images:
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
    return classes, rows, ignored


def csv_rows(labels_csv: Path, data_dir: Path):
    """Rows of a CSV with a header `path,label[,split]`, paths relative to `data_dir`, as
    `find_rows` gives them.

    Every path must exist and appear once; split values must be train, val or test.
    """
    if not labels_csv.is_file() and (data_dir / labels_csv).is_file():
        labels_csv = data_dir / labels_csv
    if not labels_csv.is_file():
        raise UserError(
            f"data.labels_csv={labels_csv} not found (relative paths are looked up in the "
            f"current directory, then in data.data_dir={data_dir})."
        )
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's BOM
        reader = csv.DictReader(f, skipinitialspace=True)
        reader.fieldnames = columns = [(name or "").strip() for name in reader.fieldnames or []]
        lines = list(reader)
    if not {"path", "label"} <= set(columns):
        raise UserError(
            f"{labels_csv} has columns {columns}; it needs a header row naming the columns "
            "path and label (and optionally split), e.g. 'path,label' then "
            "'images/ant1.jpg,ants'."
        )
    has_splits = "split" in columns
    rows, blank = [], []
    for number, line in enumerate(lines, start=2):  # line 1 is the header
        path, label, split = [(line.get(key) or "").strip() for key in ("path", "label", "split")]
        if path and label and (split in SPLIT_NAMES or not has_splits):
            rows.append(Row(path, label, split if has_splits else None))
        else:
            blank.append(str(number))
    if blank:
        need = "a path and a label" + (", and a split of train, val or test" * has_splits)
        raise UserError(f"{labels_csv}: {len(blank)} line(s) lack {need}: lines {listed(blank)}.")
    if not rows:
        raise UserError(f"{labels_csv} lists no images: add lines of path,label below its header.")
    if missing := [row.path for row in rows if not (data_dir / row.path).is_file()]:
        raise UserError(
            f"{len(missing)} of the {len(rows)} paths in {labels_csv} do not exist under "
            f"data.data_dir={data_dir}: {listed(missing)}. Paths are relative to data.data_dir."
        )
    repeated = [path for path, count in Counter(row.path for row in rows).items() if count > 1]
    if repeated:
        raise UserError(
            f"{len(repeated)} path(s) appear more than once in {labels_csv}: {listed(repeated)}. "
            "List each image once."
        )
    return rows, str(labels_csv), has_splits


def listed(items: list[str], shown: int = 5) -> str:
    """The first `shown` items (of paths or lines an error message names), then ", ..."."""
    return ", ".join(items[:shown]) + (", ..." if len(items) > shown else "")
