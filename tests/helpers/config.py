"""Composed `src.train` configs, without Hydra's runtime, and the settings of a fast run."""

from pathlib import Path

from hydra import compose, initialize_config_dir

import src.runs.slurm  # noqa: F401  (registers ${if_gpu:...}, which hydra/launcher=slurm uses)

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"

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
    "figures.enabled=false",
]


def compose_train_config(overrides: list[str]):
    """The config `python -m src.train <overrides>` would run, without Hydra's runtime."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)
