"""Bad data gets a clear error before training, or a counted skip; odd image formats just work."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data import validation
from src.data.image_folder import ImageFolderDataModule
from src.data.images import load_rgb
from src.errors import UserError
from src.train import train
from tests.helpers.data import datamodule as make_datamodule
from tests.helpers.images import make_image_folder, odd_images, write_truncated_jpeg


def datamodule(data_dir, **kwargs) -> ImageFolderDataModule:
    return make_datamodule(data_dir, image_size=32, resize_size=36, **kwargs)


def test_truncated_jpeg_stops_before_training_naming_the_file(image_folder):
    broken = image_folder / "train" / "ants" / "cut_off.jpg"
    write_truncated_jpeg(broken)
    (image_folder / "val" / "bees" / "empty.png").write_bytes(b"")
    expected = r"(?s)2 image file\(s\) cannot be read.*skip_bad_images"
    with pytest.raises(UserError, match=expected) as err:
        datamodule(image_folder)
    assert str(broken) in str(err.value)
    assert str(image_folder / "val" / "bees" / "empty.png") in str(err.value)


def test_skipped_bad_images_are_counted_and_listed_in_the_summary(fast_config, image_folder):
    broken = image_folder / "train" / "ants" / "cut_off.jpg"
    write_truncated_jpeg(broken)
    cfg = fast_config("data.skip_bad_images=true", "trainer.max_epochs=1", "callbacks=none")
    summary = train(cfg)
    assert summary.skipped_images == [str(broken)]
    assert summary.train_size == 12  # the 12 good ones
    saved = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert saved["skipped_images"] == [str(broken)]


def test_unusual_modes_and_formats_load_as_rgb_and_train(fast_config, image_folder):
    for name, img in odd_images().items():
        img.save(image_folder / "train" / "ants" / name)
    cfg = fast_config("trainer.max_epochs=1", "callbacks=none", "data.batch_size=7")
    summary = train(cfg)
    assert summary.train_size == 12 + len(odd_images())
    assert summary.skipped_images == []

    folder = image_folder / "train" / "ants"
    for name in odd_images():
        assert load_rgb(str(folder / name)).mode == "RGB", name
    red, green, blue = load_rgb(str(folder / "cmyk.jpg")).getpixel((0, 0))
    assert red > 200 and green < 60 and blue > 200  # full magenta ink reads as magenta
    # 16-bit samples are scaled to 8 bits, not clipped: the gradient is still a gradient.
    sixteen = np.asarray(load_rgb(str(folder / "sixteen_bit.png")))
    assert sixteen[0, 0, 0] < 10 and sixteen[-1, 0, 0] > 245


def test_non_image_files_are_ignored_and_reported_once(image_folder, caplog):
    junk = [
        image_folder / "train" / "ants" / ".DS_Store",
        image_folder / "train" / "ants" / "Thumbs.db",
        image_folder / "val" / "bees" / "notes.txt",
        image_folder / "train" / "README.md",
    ]
    for path in junk:
        path.write_text("not an image")
    Image.new("RGB", (8, 8)).save(image_folder / "train" / "bees" / "anim.gif")
    with caplog.at_level(logging.INFO, logger="src.data.layouts"):
        dm = datamodule(image_folder)
    assert (len(dm.train_set), len(dm.val_set)) == (12, 8)
    reports = [r.getMessage() for r in caplog.records if "not images" in r.getMessage()]
    assert len(reports) == 1
    assert all(str(path) in reports[0] for path in [*junk, image_folder / "train/bees/anim.gif"])


def test_verdicts_are_cached_until_a_file_changes(image_folder, monkeypatch):
    datamodule(image_folder)
    decoded = []
    real_check = validation.check_image
    monkeypatch.setattr(
        validation, "check_image", lambda p, *a: decoded.append(p) or real_check(p, *a)
    )
    datamodule(image_folder)
    assert decoded == []
    changed = image_folder / "train" / "ants" / "ants_0.jpg"
    write_truncated_jpeg(changed)
    with pytest.raises(UserError, match=r"ants_0\.jpg"):
        datamodule(image_folder)
    assert decoded == [str(changed)]


def test_class_only_in_train_is_named(image_folder):
    make_image_folder(image_folder / "x", classes=("wasps",))
    (image_folder / "x" / "train" / "wasps").rename(image_folder / "train" / "wasps")
    with pytest.raises(UserError, match=r"classes: train has \['ants', 'bees', 'wasps'\]"):
        datamodule(image_folder)


def test_class_only_in_val_is_named(image_folder):
    make_image_folder(image_folder / "x", classes=("wasps",))
    (image_folder / "x" / "val" / "wasps").rename(image_folder / "val" / "wasps")
    with pytest.raises(UserError, match=r"val has \['ants', 'bees', 'wasps'\]"):
        datamodule(image_folder)


def test_empty_class_folder_is_named(image_folder):
    shutil.rmtree(image_folder / "val" / "bees")
    (image_folder / "val" / "bees").mkdir()
    (image_folder / "val" / "bees" / ".DS_Store").write_text("")
    with pytest.raises(UserError, match=r"Class folder .*val/bees holds no images \(only 1 other"):
        datamodule(image_folder)


def test_split_with_a_single_class_is_rejected(image_folder):
    shutil.rmtree(image_folder / "train" / "bees")
    with pytest.raises(UserError, match=r"train has a single class folder \(ants/\).*at least two"):
        datamodule(image_folder)


def test_data_folder_that_is_a_file_is_named(tmp_path):
    archive = tmp_path / "hymenoptera_data.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(UserError, match=r"(?s)data_dir .*\.zip is a file, not a folder.*unzip"):
        datamodule(archive)


def test_unreadable_images_are_not_in_the_dataset_when_skipped(image_folder):
    write_truncated_jpeg(image_folder / "val" / "ants" / "cut_off.jpg")
    dm = datamodule(image_folder, skip_bad_images=True)
    assert len(dm.val_set) == 8
    images, _ = next(iter(dm.val_dataloader()))
    assert images.dtype == torch.float32
