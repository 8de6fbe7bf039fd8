"""Jobs that run one after another in one process (a local multirun) share decoded images and
image checks, without changing any job's result."""

import os

from PIL import Image

from src.data import validation
from src.train import train
from tests.helpers.cli import epoch_rows
from tests.helpers.config import FAST, compose_train_config


def counting(function, calls: list):
    def counted(path, *args, **kwargs):
        calls.append(path)
        return function(path, *args, **kwargs)

    return counted


def test_a_later_job_reuses_decoded_images_and_checks_and_gets_the_same_metrics(
    image_folder, tmp_path, monkeypatch
):
    decoded, checked = [], []
    monkeypatch.setattr(validation, "decode", counting(validation.decode, decoded))
    monkeypatch.setattr(validation, "check_image", counting(validation.check_image, checked))

    def job(name: str) -> dict:
        out = tmp_path / name
        out.mkdir()
        overrides = [f"data.data_dir={image_folder}", f"paths.output_dir={out}", "seed=3",
                     "trainer.max_epochs=2", "trainer.deterministic=true"]  # fmt: skip
        train(compose_train_config([*FAST, *overrides]))
        return {key: epoch_rows(out, key) for key in ("train/loss", "val/loss", "val/acc")}

    alone = job("first")  # decodes and checks all 20 images
    assert len(decoded) == len(checked) == 20
    shared = job("second")
    assert len(decoded) == len(checked) == 20  # nothing decoded or checked again
    assert shared == alone

    # A file that changed between jobs is read again; the others are still shared.
    changed = image_folder / "val" / "bees" / "bees_0.jpg"
    Image.new("RGB", (48, 40), (250, 250, 250)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new modification time, even on a coarse clock
    job("third")
    assert decoded[20:] == checked[20:] == [str(changed)]
