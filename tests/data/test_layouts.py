"""Dataset layouts (split folders, one folder of class folders, a CSV), the splits made from
them (stratified fractions, k-fold), and a clear message for each bad input."""

import csv
import shutil
from pathlib import Path

import lightning as L
import pytest

from src.data.splits import SplitSettings, build_splits
from src.errors import UserError
from tests.helpers.data import datamodule
from tests.helpers.images import (
    make_class_folders,
    make_image_folder,
    write_class_images,
    write_truncated_jpeg,
)


def split_of(dm) -> dict[str, set[str]]:
    """{split: relative paths} of a set-up datamodule."""
    out: dict[str, set[str]] = {}
    for row in dm.splits.rows:
        out.setdefault(row.split, set()).add(row.path)
    return out


def write_csv(path: Path, rows: list[list[str]], header=("path", "label", "split")) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def one_folder(tmp_path) -> Path:
    return make_class_folders(tmp_path / "one", {"ants": 10, "bees": 10})


def test_one_folder_is_split_stratified_by_the_fractions(one_folder):
    (one_folder / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    dm = datamodule(one_folder, val_fraction=0.2, test_fraction=0.3)
    assert dm.class_names == ["ants", "bees"]
    assert dm.splits.counts() == {
        "train": {"ants": 5, "bees": 5},
        "val": {"ants": 2, "bees": 2},
        "test": {"ants": 3, "bees": 3},
    }
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (10, 4, 6)
    paths = split_of(dm)
    assert set.union(*paths.values()) == {
        f"{c}/{c}_{i}.jpg" for c in ("ants", "bees") for i in range(10)
    }
    assert sum(map(len, paths.values())) == 20  # no image in two splits
    # Labels come from the class folders, whatever the split.
    assert all(dm.val_set.classes[label] in path for path, label in dm.val_set.samples)


def test_the_split_follows_split_seed_and_not_the_training_seed(one_folder):
    L.seed_everything(1)
    first = split_of(datamodule(one_folder, split_seed=3))
    L.seed_everything(2)
    assert split_of(datamodule(one_folder, split_seed=3)) == first
    assert split_of(datamodule(one_folder, split_seed=4)) != first


def test_split_folders_with_a_test_folder_keep_their_splits(tmp_path):
    data = make_image_folder(tmp_path / "data")
    for c, name in enumerate(("ants", "bees")):
        write_class_images(data / "test" / name, c, 3)
    dm = datamodule(data, cache_images=True, image_size=32, resize_size=36)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 8, 6)
    assert all(path.startswith("test/") for path in split_of(dm)["test"])
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape[1:] == (3, 32, 32) and set(labels.tolist()) <= {0, 1}


def test_split_folders_without_test_have_no_test_set(image_folder):
    dm = datamodule(image_folder)
    assert dm.test_set is None and dm.splits.names() == ["train", "val"]


def test_labels_csv_with_a_split_column_is_used_as_it_is(tmp_path):
    data = make_class_folders(tmp_path / "data", {"ants": 4, "bees": 4})
    rows = [[f"{c}/{c}_{i}.jpg", c, ("train", "train", "val", "test")[i]] for c in ("ants", "bees")
            for i in range(4)]  # fmt: skip
    labels = write_csv(tmp_path / "labels.csv", rows)
    dm = datamodule(data, labels_csv=str(labels))
    assert dm.splits.counts() == {
        "train": {"ants": 2, "bees": 2},
        "val": {"ants": 1, "bees": 1},
        "test": {"ants": 1, "bees": 1},
    }
    assert split_of(dm)["val"] == {"ants/ants_2.jpg", "bees/bees_2.jpg"}


def test_labels_csv_without_a_split_column_is_split_by_the_fractions(tmp_path):
    # The labels come from the CSV, not from the folders the images happen to sit in.
    data = tmp_path / "data"
    write_class_images(data / "images", 0, 20)
    rows = [[f"images/images_{i}.jpg", "odd" if i % 2 else "even"] for i in range(20)]
    labels = write_csv(data / "labels.csv", rows, header=("path", "label"))
    dm = datamodule(data, labels_csv=labels.name, val_fraction=0.2)  # found in data_dir
    assert dm.class_names == ["even", "odd"]
    assert dm.splits.counts()["val"] == {"even": 2, "odd": 2}


@pytest.mark.parametrize("layout", ["folders", "one_folder"])
def test_folds_partition_train_and_val_and_leave_test_out(tmp_path, layout):
    if layout == "folders":
        data = make_image_folder(tmp_path / "data", train_per_class=7, val_per_class=2)
        for c, name in enumerate(("ants", "bees")):
            write_class_images(data / "test" / name, c, 2)
        settings, test_size = {}, 4
    else:
        data = make_class_folders(tmp_path / "data", {"ants": 10, "bees": 10})
        settings, test_size = {"test_fraction": 0.1}, 2
    folds = [build_splits(data, SplitSettings(num_folds=3, fold=i, **settings)) for i in range(3)]
    vals = [{r.path for r in s.rows if r.split == "val"} for s in folds]
    tests = [{r.path for r in s.rows if r.split == "test"} for s in folds]
    pool = {r.path for r in folds[0].rows if r.split != "test"}
    assert set.union(*vals) == pool and sum(map(len, vals)) == len(pool) == 18
    assert tests[0] == tests[1] == tests[2] and len(tests[0]) == test_size
    assert all(counts["val"] == {"ants": 3, "bees": 3} for counts in (s.counts() for s in folds))


def test_bad_images_are_found_in_every_layout(one_folder, tmp_path):
    broken = one_folder / "bees" / "cut.jpg"
    write_truncated_jpeg(broken)
    with pytest.raises(UserError, match=r"1 image file\(s\) cannot be read"):
        datamodule(one_folder)
    dm = datamodule(one_folder, skip_bad_images=True)
    assert dm.skipped_images == [str(broken)]
    assert sum(len(s) for s in (dm.train_set, dm.val_set)) == 20  # the split keeps its row
    rows = [[f"{p.parent.name}/{p.name}", p.parent.name] for p in one_folder.rglob("*_*.jpg")]
    labels = write_csv(tmp_path / "l.csv", [*rows, ["bees/cut.jpg", "bees"]], ("path", "label"))
    with pytest.raises(UserError, match=r"1 image file\(s\) cannot be read:\n.*bees/cut\.jpg"):
        datamodule(one_folder, labels_csv=str(labels))


# Bad input: each stops with a message naming what is wrong.


def test_csv_without_the_needed_columns_is_named(one_folder, tmp_path):
    labels = write_csv(tmp_path / "l.csv", [["ants/ants_0.jpg", "ants"]], header=("file", "y"))
    with pytest.raises(UserError, match=r"columns \['file', 'y'\].*path and label"):
        datamodule(one_folder, labels_csv=str(labels))


def test_csv_paths_that_do_not_exist_are_listed_with_their_count(one_folder, tmp_path):
    rows = [[f"ants/missing_{i}.jpg", "ants"] for i in range(7)] + [["bees/bees_0.jpg", "bees"]]
    labels = write_csv(tmp_path / "l.csv", rows, header=("path", "label"))
    with pytest.raises(UserError, match=r"7 of the 8 paths") as err:
        datamodule(one_folder, labels_csv=str(labels))
    assert "ants/missing_4.jpg, ..." in str(err.value)
    assert "missing_5" not in str(err.value)


def test_csv_label_that_one_split_lacks_is_named(one_folder, tmp_path):
    rows = [[f"{c}/{c}_{i}.jpg", c, "train"] for c in ("ants", "bees") for i in range(3)]
    rows += [["ants/ants_5.jpg", "ants", "val"], ["bees/bees_5.jpg", "wasps", "val"]]
    labels = write_csv(tmp_path / "l.csv", rows)
    with pytest.raises(UserError, match=r"'bees' has no image in the val split \(train 3, val 0"):
        datamodule(one_folder, labels_csv=str(labels))


def test_fractions_that_leave_a_class_out_of_a_split_name_it(tmp_path):
    data = make_class_folders(tmp_path / "data", {"ants": 10, "bees": 2})
    with pytest.raises(UserError, match=r"'bees' has no image in the val split \(train 2, val 0"):
        datamodule(data, val_fraction=0.2)
    with pytest.raises(UserError, match=r"test_fraction=0.05.*\{'ants': 10, 'bees': 2\}"):
        datamodule(data, test_fraction=0.05)


@pytest.mark.parametrize("fold", [5, -1])
def test_fold_outside_the_folds_is_rejected(one_folder, fold):
    with pytest.raises(UserError, match=rf"data.fold={fold}.*one of 0\.\.4"):
        datamodule(one_folder, num_folds=5, fold=fold)


def test_more_folds_than_images_of_a_class_is_rejected(tmp_path):
    data = make_class_folders(tmp_path / "data", {"ants": 10, "bees": 3})
    with pytest.raises(UserError, match=r"num_folds=4 .*\{'bees': 3\}"):
        datamodule(data, num_folds=4, fold=0)


def test_test_folder_with_other_classes_is_rejected(image_folder):
    shutil.copytree(image_folder / "val", image_folder / "test")
    (image_folder / "test" / "bees").rename(image_folder / "test" / "wasps")
    with pytest.raises(UserError, match=r"train has \['ants', 'bees'\], test has \['ants', 'wasps"):
        datamodule(image_folder)
