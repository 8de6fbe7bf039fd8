"""Shared fixtures: small generated ImageFolder trees and composed configs."""

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
REAL_DATA_ENV = "HYMENOPTERA_DATA"

# Settings that keep a test run to seconds: tiny crops, no worker processes, no progress bars.
FAST = [
    "model.weights=null",
    "data.num_workers=0",
    "data.image_size=32",
    "data.resize_size=36",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "figures=false",
]


def make_image_folder(
    root: Path, classes=("ants", "bees"), train_per_class=6, val_per_class=4, size=(48, 40)
) -> Path:
    """Write train/ and val/ JPEGs, one solid colour per class (easy to learn)."""
    palette = [(200, 40, 40), (40, 40, 200), (40, 200, 40), (200, 200, 40)]
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                shade = tuple(min(255, v + 5 * i) for v in palette[c % len(palette)])
                Image.new("RGB", size, shade).save(folder / f"{name}_{i}.jpg")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data")


def compose_train_config(overrides: list[str]):
    """The config `python -m src.train <overrides>` would run, without Hydra's runtime."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.fixture
def fast_config(image_folder: Path, tmp_path: Path):
    """Build a config for a seconds-long training run on the generated data."""

    def build(*overrides: str):
        out = tmp_path / "run"
        out.mkdir(exist_ok=True)
        return compose_train_config(
            [*FAST, f"data.data_dir={image_folder}", f"paths.output_dir={out}", *overrides]
        )

    return build


@pytest.fixture
def real_data() -> Path:
    """The real hymenoptera folder named by $HYMENOPTERA_DATA, or skip."""
    value = os.environ.get(REAL_DATA_ENV)
    if not value:
        pytest.skip(f"${REAL_DATA_ENV} is not set; it names the hymenoptera_data folder")
    path = Path(value)
    if not (path / "train").is_dir():
        pytest.skip(f"${REAL_DATA_ENV}={value} has no train/ folder")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished 3-epoch run on generated data, shared by the inspection tests. Trained in
    fp32 so that re-evaluating its best checkpoint reproduces the logged numbers exactly."""
    from src.train import train

    root = tmp_path_factory.mktemp("trained")
    data, run_dir = make_image_folder(root / "data"), root / "run"
    run_dir.mkdir()
    overrides = [f"data.data_dir={data}", f"paths.output_dir={run_dir}", "trainer.max_epochs=3"]
    train(compose_train_config([*FAST, *overrides, "trainer.precision=32-true"]))
    return run_dir


@pytest.fixture(autouse=True)
def image_check_cache(tmp_path: Path, monkeypatch):
    """Keep src.data.validation's cache of image verdicts out of the home directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
