"""One image path: every command reads a file into the same network input, and eval treats
bad files as training does."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from src.data.image_folder import ImageFolderDataModule
from src.data.images import load_rgb
from src.eval import evaluate
from src.models.transfer import TransferLearningModel
from src.predict import predict
from tests.helpers.cli import run_module
from tests.helpers.images import make_image_folder, picture_forms, write_truncated_jpeg
from tests.helpers.training import record_inputs


def large_photo(size=(200, 150)) -> Image.Image:
    """A JPEG-sized photo of noise, over 4x `resize_size=36`: draft mode decodes it at 1/4."""
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (*size[::-1], 3), np.uint8))


@pytest.fixture
def forms_folder(tmp_path):
    """A data folder whose val/ants/ holds one picture in each form and a large photo (and
    each class one JPEG)."""
    data = make_image_folder(tmp_path / "forms", val_per_class=1)
    for name, (image, fmt) in picture_forms().items():
        image.save(data / "val" / "ants" / name, fmt)
    large_photo().save(data / "val" / "ants" / "large.jpg", "JPEG")
    return data


def run_with_jpeg_draft(run_dir, tmp_path):
    """A copy of `run_dir` whose config says it trained with `data.jpeg_draft=true`."""
    copy = shutil.copytree(run_dir, tmp_path / "draft_run")
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"]["jpeg_draft"] = True
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


@pytest.fixture
def network_inputs(monkeypatch):
    """Records every batch the model's forward receives, as {path-order index: tensor}."""
    return record_inputs(monkeypatch, TransferLearningModel, "forward")


@pytest.mark.parametrize(
    ("cache_images", "jpeg_draft"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_train_val_eval_and_predict_feed_the_network_identical_inputs(
    trained_run, forms_folder, network_inputs, cache_images, jpeg_draft, tmp_path
):
    """eval and predict read the images as the run did (`data.jpeg_draft` from its config)."""
    if jpeg_draft:
        trained_run = run_with_jpeg_draft(trained_run, tmp_path)
    datamodule = ImageFolderDataModule(
        forms_folder, num_workers=0, image_size=32, resize_size=36, cache_images=cache_images,
        jpeg_draft=jpeg_draft,
    )  # fmt: skip
    datamodule.setup("fit")
    val_set = datamodule.val_set
    paths = [path for path, _ in val_set.samples]
    training_view = {path: val_set[i][0] for i, path in enumerate(paths)}
    assert len(paths) == len(picture_forms()) + 3  # the large photo and one JPEG per class

    results = evaluate(run_dir=str(trained_run), data_dir=str(forms_folder))
    assert results["num_images"] == len(paths)
    eval_view = dict(zip(paths, network_inputs, strict=True))  # eval keeps the folder order
    network_inputs.clear()

    rows = predict(str(trained_run / "checkpoints" / "last.ckpt"), paths, top_k=1)
    assert all(row["error"] is None for row in rows)
    predict_view = dict(zip([row["path"] for row in rows], network_inputs, strict=True))

    for path in paths:
        assert torch.equal(training_view[path], eval_view[path]), path
        assert torch.equal(training_view[path], predict_view[path]), path
    # The 16-bit picture is a picture, not a white page: its mean is that of its 8-bit twin.
    grey8 = training_view[str(forms_folder / "val" / "ants" / "grey8.png")]
    grey16 = training_view[str(forms_folder / "val" / "ants" / "grey16.png")]
    assert (grey16 - grey8).abs().mean() < 0.05


def test_jpeg_draft_decodes_only_large_jpegs_at_a_reduced_scale(tmp_path):
    large_photo().save(tmp_path / "large.jpg", "JPEG")
    large_photo().save(tmp_path / "large.png", "PNG")
    large_photo((60, 40)).save(tmp_path / "small.jpg", "JPEG")
    # 200x150 at 1/4 is 50x38: the smallest scale that keeps both sides at least 36.
    assert load_rgb(tmp_path / "large.jpg", draft_size=36).size == (50, 38)
    assert load_rgb(tmp_path / "large.jpg", draft_size=70).size == (100, 75)
    assert load_rgb(tmp_path / "large.png", draft_size=36).size == (200, 150)
    small, small_draft = load_rgb(tmp_path / "small.jpg"), load_rgb(tmp_path / "small.jpg", 36)
    assert np.array_equal(np.asarray(small), np.asarray(small_draft))


def truncated_copy(trained_run, tmp_path):
    data = make_image_folder(tmp_path / "data")  # the run's classes and colours
    broken = data / "val" / "bees" / "cut.jpg"
    write_truncated_jpeg(broken)
    return data, broken


def test_eval_on_a_split_with_a_truncated_image_exits_2_naming_it(trained_run, tmp_path):
    data, broken = truncated_copy(trained_run, tmp_path)
    result = run_module(
        "src.eval", f"run_dir={trained_run}", f"data.data_dir={data}",
        f"output={tmp_path / 'eval.json'}",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert str(broken) in output and "skip_bad_images" in output
    assert "Traceback" not in output
    assert not (tmp_path / "eval.json").exists()


def test_eval_skips_and_counts_undecodable_images_when_asked(trained_run, tmp_path):
    data, broken = truncated_copy(trained_run, tmp_path)
    result = run_module(
        "src.eval", f"run_dir={trained_run}", f"data.data_dir={data}",
        "data.skip_bad_images=true", f"output={tmp_path / 'eval.json'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["skipped_images"] == [str(broken)]
    assert results["num_images"] == 8  # the 8 readable val images
    assert "1 unreadable skipped" in result.stdout


def test_an_exported_model_reads_images_as_its_run_did(trained_run, tmp_path):
    from src.export import export
    from src.models.exported import ExportedModel
    from src.predict import load_classifier

    run = run_with_jpeg_draft(trained_run, tmp_path)
    ckpt = next((run / "checkpoints").glob("best-*.ckpt"))
    assert load_classifier(str(ckpt), None, None)[3] == 36  # the run's resize_size
    path, parity = export(str(ckpt), "torchscript", str(tmp_path / "model.pt"))
    assert parity.ok
    assert ExportedModel(path).preprocessing["jpeg_draft"] is True
    assert load_classifier(str(path), None, None)[3] == 36
    assert load_classifier(str(path), None, None, jpeg_draft=False)[3] is None
