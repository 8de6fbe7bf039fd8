"""What the experiment trackers get besides Lightning's per-epoch metrics: the resolved config
when a run starts, and its results (best val/acc, test accuracy) and files when it ends."""

from pathlib import Path

import numpy as np
from lightning.fabric.utilities.logger import _flatten_dict
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from omegaconf import OmegaConf

from src.data.images import load_rgb
from src.runs.resume import RUN_KEYS


def flat_config(cfg) -> dict:
    """The resolved config as {"optimizer.lr": 0.001, ...}: the keys users override."""
    flat = _flatten_dict(OmegaConf.to_container(cfg, resolve=True), ".").items()
    return {k: str(v) if isinstance(v, list) else v for k, v in flat if k not in RUN_KEYS}


def log_config(loggers: list, cfg) -> None:
    """Send the config to the trackers that keep parameters from the start (MLflow, W&B).
    TensorBoard gets it at the end, together with the metric its HParams tab compares."""
    params = flat_config(cfg)
    for logger in loggers:
        if isinstance(logger, (MLFlowLogger, WandbLogger)):
            logger.log_hyperparams(params)


def log_run_end(loggers: list, run_dir: Path, summary, cfg, step: int) -> None:
    """Send a finished (or interrupted) run's results and files to each tracker."""
    run_dir = Path(run_dir)
    figures = sorted((run_dir / "figures").glob("*.png"))
    best_ckpt = summary.best_ckpt_path(run_dir)
    values = vars(summary)
    # The numbers a sweep is compared by (test_acc only when the data has a test split).
    results = {k: values[k] for k in ("best_val_acc", "test_acc") if values[k] is not None}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(flat_config(cfg), {f"hp/{k}": v for k, v in results.items()})
            for path in figures:
                image = np.asarray(load_rgb(path))
                logger.experiment.add_image(f"figures/{path.stem}", image, step, dataformats="HWC")
            logger.experiment.flush()
        elif isinstance(logger, MLFlowLogger):
            client, run_id = logger.experiment, logger.run_id
            for key, value in results.items():
                client.log_metric(run_id, f"summary/{key}", value)
            files = [(run_dir / "summary.json", None), (run_dir / "config.yaml", None)]
            files += [(path, "figures") for path in figures] + [(best_ckpt, "checkpoints")]
            for path, folder in files:
                if path is not None and path.is_file():
                    client.log_artifact(run_id, str(path), folder)
            if summary.interrupted:  # Lightning marked it FAILED; it can be resumed
                client.set_terminated(run_id, "KILLED")
        elif isinstance(logger, WandbLogger):
            for path in figures:
                logger.log_image(f"figures/{path.stem}", [str(path)], step=step)
            scalars = {k: v for k, v in values.items() if isinstance(v, int | float | str | bool)}
            logger.experiment.summary.update(scalars)
            # Ended here, not at process exit: the next run in this process (a local
            # multirun's next job, a notebook's next train()) starts a W&B run of its own.
            logger.experiment.finish(exit_code=1 if summary.interrupted else 0)
