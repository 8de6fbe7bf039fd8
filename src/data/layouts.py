"""Find the labelled images of a dataset from what `data.data_dir` holds (or a CSV lists).

Three layouts, each read into the same rows of (path, label, split):

- split folders: `train/<class>/` and `val/<class>/`, optionally `test/<class>/`;
  every row has its split;
- one folder of class folders, `<class>/<image>`: no row has a split yet
  (`src.data.splits` splits them);
- `data.labels_csv`: a CSV with columns `path,label` and optionally `split`.

Paths are kept relative to `data_dir` (as POSIX strings), so a split survives the data
folder moving. No image is decoded here; that happens per split in `src.data.splits`.
"""

import csv
from pathlib import Path
from typing import NamedTuple

from src.data.validation import LAYOUT, class_folders, report_ignored, require_folder
from src.errors import UserError

SPLIT_NAMES = ("train", "val", "test")
SHOWN = 5  # how many offending paths or lines an error message lists


class Row(NamedTuple):
    """One labelled image: its path (relative to data_dir), class label and split."""

    path: str
    label: str
    split: str | None  # None: not assigned yet (one folder, or a CSV without a split column)


class Found(NamedTuple):
    """The rows of a dataset, and how they were found (for messages)."""

    rows: list[Row]
    source: str  # "split folders", "one folder of class folders" or the CSV's path
    has_splits: bool  # True when the layout itself says which split each image is in


def find_rows(data_dir: Path, labels_csv: str | Path | None, wanted=SPLIT_NAMES) -> Found:
    """The labelled images of the dataset in `data_dir` (or listed by `labels_csv`).

    With split folders only the `wanted` ones are read (`train/` and `val/` must exist when
    wanted, `test/` is optional); `src.eval` reads just the split it evaluates.
    """
    if labels_csv:
        return csv_rows(Path(labels_csv).expanduser(), data_dir)
    require_folder(data_dir)
    if not data_dir.is_dir():
        raise UserError(
            f"Data folder not found: {data_dir}. Point data.data_dir at a folder laid out as "
            f"{LAYOUT} (the data may have moved)."
        )
    if any((data_dir / split).is_dir() for split in ("train", "val")):
        return split_folder_rows(data_dir, wanted)
    found = class_folders(data_dir)
    report_ignored(found.ignored)
    rows = [
        Row(relative(path, data_dir), label, None)
        for label, paths in found.images.items()
        for path in paths
    ]
    return Found(rows, "one folder of class folders", has_splits=False)


def split_folder_rows(data_dir: Path, wanted) -> Found:
    """Rows of `train/`, `val/` (both required when wanted) and `test/` (when present)."""
    folders = {}
    for split in SPLIT_NAMES:
        if split not in wanted:
            continue
        split_dir = data_dir / split
        if split_dir.is_dir():
            folders[split] = class_folders(split_dir)
        elif split != "test":
            found = sorted(p.name for p in data_dir.iterdir())
            raise UserError(
                f"Missing split folder {split_dir}. Expected {data_dir}/{split}/<class>/ with "
                f"images (fix data.data_dir); found {found}."
            )
    first, *others = folders
    for split in others:
        if folders[split].classes != folders[first].classes:
            raise UserError(
                f"{first}/ and {split}/ in {data_dir} hold different classes: {first} has "
                f"{folders[first].classes}, {split} has {folders[split].classes}. Every split "
                "needs the same class sub-folders."
            )
    report_ignored([path for found in folders.values() for path in found.ignored])
    rows = [
        Row(relative(path, data_dir), label, split)
        for split, found in folders.items()
        for label, paths in found.images.items()
        for path in paths
    ]
    return Found(rows, "split folders", has_splits=True)


def csv_rows(labels_csv: Path, data_dir: Path) -> Found:
    """Rows of a CSV with a header `path,label[,split]`; paths relative to `data_dir`.

    Every path must exist and appear once; split values must be train, val or test.
    """
    if not labels_csv.is_file() and not labels_csv.is_absolute() and data_dir.is_dir():
        labels_csv = data_dir / labels_csv if (data_dir / labels_csv).is_file() else labels_csv
    if not labels_csv.is_file():
        raise UserError(
            f"data.labels_csv={labels_csv} not found (relative paths are looked up in the "
            f"current directory, then in data.data_dir={data_dir})."
        )
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's BOM
        reader = csv.DictReader(f, skipinitialspace=True)
        columns = [(name or "").strip() for name in reader.fieldnames or []]
        reader.fieldnames = columns
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
        values = [(line.get(key) or "").strip() for key in ("path", "label", "split")]
        path, label, split = values
        if not path or not label or (has_splits and split not in SPLIT_NAMES):
            blank.append(number)
            continue
        rows.append(Row(path, label, split if has_splits else None))
    if blank:
        need = "a path and a label" + (", and a split of train, val or test" * has_splits)
        raise UserError(
            f"{labels_csv}: {len(blank)} line(s) lack {need}: lines "
            f"{', '.join(map(str, blank[:SHOWN]))}{', ...' if len(blank) > SHOWN else ''}."
        )
    if not rows:
        raise UserError(f"{labels_csv} lists no images: add lines of path,label below its header.")
    missing = [row.path for row in rows if not (data_dir / row.path).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} of the {len(rows)} paths in {labels_csv} do not exist under "
            f"data.data_dir={data_dir}: {', '.join(missing[:SHOWN])}"
            f"{', ...' if len(missing) > SHOWN else ''}. Paths are relative to data.data_dir."
        )
    seen, repeated = set(), []
    for row in rows:
        if row.path in seen:
            repeated.append(row.path)
        seen.add(row.path)
    if repeated:
        raise UserError(
            f"{len(repeated)} path(s) appear more than once in {labels_csv}: "
            f"{', '.join(repeated[:SHOWN])}{', ...' if len(repeated) > SHOWN else ''}. "
            "List each image once."
        )
    return Found(rows, str(labels_csv), has_splits)


def relative(path: Path, data_dir: Path) -> str:
    """`path` relative to `data_dir` as a POSIX string (absolute when outside it)."""
    try:
        return path.relative_to(data_dir).as_posix()
    except ValueError:
        return str(path)
