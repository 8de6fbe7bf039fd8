"""Find a learning rate: `python -m src.lr_find [any src.train overrides]`.

Runs Lightning's learning-rate range test (`Tuner.lr_find`): `lr_find.num_training` steps
with the learning rate growing from `lr_find.min_lr` to `lr_find.max_lr`, on the backbone,
strategy and data that `src.train` would use with the same overrides. With `lp_ft` and
`gradual` that is the head on the frozen backbone, as in their first epochs. Writes
`lr_find.png` (loss against learning rate, the suggestion marked) and `lr_find.json`
(`{"suggested_lr": ...}`) into its run directory, then prints the `src.train` command.
"""

import json
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="lr_find")
def main(cfg: DictConfig) -> None:
    from src.errors import exit_on_user_error

    with exit_on_user_error(log):
        results = find_lr(cfg)
    # The command line of src.train: these overrides without lr_find's own, with the lr found.
    lr, own = results["suggested_lr"], ("lr_find.", "hydra.", "optimizer.lr=")
    overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(own)]
    log.info("Suggested learning rate %.3g; wrote %s", lr, results["plot"])
    command = " ".join(["python -m src.train", *overrides, f"optimizer.lr={lr:.3g}"])
    print(f"Train with it:\n  {command}")


def find_lr(cfg: DictConfig) -> dict:
    """Run the range test of `cfg`; write and return its results (suggested_lr, lr, loss)."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.tuner import Tuner

    from src.errors import UserError
    from src.train import data_and_model
    from src.training.config_checks import check_config
    from src.training.precision import resolve_precision

    logging.getLogger("lightning").handlers.clear()  # Hydra's handler prints already
    check_config(cfg)
    settings = cfg.lr_find
    if not 0 < settings.min_lr < settings.max_lr:
        raise UserError(
            f"lr_find.min_lr={settings.min_lr} and lr_find.max_lr={settings.max_lr}: "
            "they must satisfy 0 < min_lr < max_lr."
        )
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model = data_and_model(cfg)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    # Only the strategy's callbacks: they freeze what the first epochs of training freeze.
    callbacks = [instantiate(c) for c in (cfg.strategy.get("callbacks") or {}).values()]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=False, precision=precision,
        enable_checkpointing=False,
    )  # fmt: skip
    # The lr_find keys are Tuner.lr_find's arguments; the suggestion goes to the printed
    # command, not to the model.
    finder = Tuner(trainer).lr_find(model, datamodule=datamodule, **settings, update_attr=False)
    suggested = None if finder is None else finder.suggestion()
    if suggested is None:
        steps = 0 if finder is None else len(finder.results.get("lr", []))
        raise UserError(
            f"The range test has no suggestion after {steps} steps (it needs more than 11 "
            "finite losses): raise lr_find.num_training, lower lr_find.max_lr, or use more "
            "training images per epoch."
        )
    plot = output_dir / "lr_find.png"
    figure = finder.plot(suggest=True, show=False)
    figure.axes[0].set_title(
        f"{cfg.model.get('backbone', 'resnet18')}, strategy={cfg.strategy.name}: "
        f"suggested lr {suggested:.3g} (red)"
    )
    figure.savefig(plot, dpi=100, bbox_inches="tight")
    results = {"suggested_lr": suggested, "plot": str(plot), **finder.results}  # + lr, loss
    (output_dir / "lr_find.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    from src.errors import run_command_line

    run_command_line(main)
