"""The image-folder datamodule: sizes, class names, transforms and clear errors."""

import os

import pytest
import torch

from src.data.image_folder import default_num_workers
from src.errors import UserError
from tests.helpers.data import datamodule
from tests.helpers.images import make_image_folder


def test_sizes_and_class_names_come_from_the_folders(image_folder):
    dm = datamodule(image_folder)
    assert dm.class_names == ["ants", "bees"]
    assert (len(dm.train_set), len(dm.val_set)) == (12, 8)


def test_number_of_classes_follows_the_folders(tmp_path):
    dm = datamodule(make_image_folder(tmp_path, classes=("cat", "dog", "fox")))
    assert dm.class_names == ["cat", "dog", "fox"]


def test_batches_are_normalised_square_crops(image_folder):
    dm = datamodule(image_folder, batch_size=3, image_size=32, resize_size=36)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    val_images, _ = next(iter(dm.val_dataloader()))
    assert val_images.shape == (3, 3, 32, 32)
    # Normalised with ImageNet statistics: a solid red image is far above 1 in channel 0.
    assert val_images[..., 0, :, :].max() > 1.0


def test_validation_is_deterministic_and_training_is_augmented(tmp_path):
    # A left-to-right gradient: horizontal flips and random crops change the pixels.
    root = make_image_folder(tmp_path, train_per_class=1, val_per_class=1, size=(64, 48))
    from PIL import Image

    gradient = Image.linear_gradient("L").resize((64, 48)).convert("RGB")
    for path in root.rglob("*.jpg"):
        gradient.save(path)
    dm = datamodule(root, image_size=32, resize_size=36)
    val_a, val_b = dm.val_set[0][0], dm.val_set[0][0]
    assert torch.equal(val_a, val_b)
    crops = [dm.train_set[0][0] for _ in range(10)]
    assert any(not torch.equal(crops[0], c) for c in crops[1:])


def test_missing_data_folder_says_where_it_looked(tmp_path):
    with pytest.raises(UserError, match=r"(?s)Data folder not found: .*nowhere.*data\.data_dir"):
        datamodule(tmp_path / "nowhere", download=False)


def test_missing_split_is_named(image_folder):
    import shutil

    shutil.rmtree(image_folder / "val")
    with pytest.raises(UserError, match=r"Missing split folder .*val"):
        datamodule(image_folder)


def test_empty_split_is_reported(image_folder):
    for path in (image_folder / "train").rglob("*.jpg"):
        path.unlink()
    with pytest.raises(UserError, match=r"No images in .*train"):
        datamodule(image_folder)


def test_train_and_val_must_hold_the_same_classes(tmp_path):
    make_image_folder(tmp_path, classes=("ants", "bees"))
    make_image_folder(tmp_path / "extra", classes=("wasps",))
    (tmp_path / "extra" / "val" / "wasps").rename(tmp_path / "val" / "wasps")
    with pytest.raises(UserError, match="different classes"):
        datamodule(tmp_path)


@pytest.fixture
def served_zip(tmp_path):
    """A zip of a generated data folder, served over HTTP on localhost (stands in for the web)."""
    import functools
    import http.server
    import shutil
    import threading

    source = make_image_folder(tmp_path / "src" / "tiny_data")
    shutil.make_archive(str(tmp_path / "www" / "tiny_data"), "zip", tmp_path / "src")
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www")
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield source, f"http://127.0.0.1:{server.server_address[1]}/tiny_data.zip"
    server.shutdown()


def test_download_fetches_and_checks_the_zip(tmp_path, served_zip):
    from src.data.image_folder import tree_sha256

    source, url = served_zip
    target = tmp_path / "fetched" / "tiny_data"
    dm = datamodule(target, download=True, download_url=url, tree_sha256=tree_sha256(source))
    assert len(dm.train_set) == 12
    assert tree_sha256(target) == tree_sha256(source)


def test_download_with_a_wrong_checksum_leaves_nothing_behind(tmp_path, served_zip):
    _, url = served_zip
    target = tmp_path / "fetched" / "tiny_data"
    with pytest.raises(UserError, match="does not match its checksum"):
        datamodule(target, download=True, download_url=url, tree_sha256="0" * 64)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_unreachable_download_explains_how_to_get_the_data(tmp_path):
    with pytest.raises(UserError, match=r"(?s)Could not download .*data\.data_dir"):
        datamodule(
            tmp_path / "hymenoptera_data",
            download=True,
            download_url="http://127.0.0.1:9/hymenoptera_data.zip",  # nothing listens here
        )


def test_decoded_image_cache_gives_validation_the_same_pixels(tmp_path):
    from PIL import Image

    root = make_image_folder(tmp_path, train_per_class=2, val_per_class=2, size=(90, 60))
    noise = Image.effect_noise((90, 60), 60).convert("RGB")  # detail that resizing would blur
    for path in root.rglob("*.jpg"):
        noise.save(path)
    plain = datamodule(root, image_size=32, resize_size=36)
    cached = datamodule(root, image_size=32, resize_size=36, cache_images=True)
    assert len(cached.val_set) == len(plain.val_set) == 4
    for i in range(4):
        assert torch.equal(cached.val_set[i][0], plain.val_set[i][0])
        assert cached.val_set[i][1] == plain.val_set[i][1]
    assert cached.train_set[0][0].shape == (3, 32, 32)


def test_cache_larger_than_the_limit_is_skipped(image_folder, caplog):
    dm = datamodule(image_folder, cache_images=True, cache_max_gb=1e-9)
    assert dm.cached_splits == []
    assert "Not caching decoded images" in caplog.text


def test_null_workers_feed_a_gpu_from_every_core_and_stay_out_of_the_way_on_a_cpu(
    image_folder, monkeypatch
):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert datamodule(image_folder, num_workers=None, cache_images=True).workers() == 0
    assert datamodule(image_folder, num_workers=None, cache_images=False).workers() == 4
    # A cache over cache_max_gb is skipped: the loader then decodes, and gets workers.
    skipped = datamodule(image_folder, num_workers=None, cache_images=True, cache_max_gb=1e-9)
    assert skipped.workers() == 4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert datamodule(image_folder, num_workers=None, cache_images=True).workers() == 16
    assert default_num_workers(cached=True, processes_per_node=4) == 4  # DDP on 4 GPUs
    assert datamodule(image_folder, num_workers=3).workers() == 3
