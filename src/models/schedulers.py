"""Learning-rate schedules (`conf/scheduler`): torch's schedulers, stepped per epoch or per
batch as each option says, and a cosine decay with linear warm-up."""

import inspect
import math

from hydra.utils import instantiate
from torch.optim.lr_scheduler import LambdaLR

from src.errors import UserError


def lightning_scheduler(config: dict, optimizer, trainer) -> dict:
    """Lightning's scheduler entry for a `conf/scheduler` option.

    `interval` (`epoch` or `step`: when Lightning steps it) is read from the option; the rest
    is a partial scheduler, called with the optimizer and, where it takes them, `epochs` and
    `steps_per_epoch` (`OneCycleLR`, `cosine`), known only once the Trainer has the data.
    """
    config = dict(config)
    interval = config.pop("interval", "epoch")
    factory = instantiate(config)
    wanted = inspect.signature(factory).parameters
    known = {}
    if "epochs" in wanted or "steps_per_epoch" in wanted:
        if trainer.max_epochs is None or trainer.max_epochs < 0:
            raise UserError(
                f"The scheduler {config['_target_']} plans its schedule over the whole run: "
                f"set trainer.max_epochs (it is {trainer.max_epochs})."
            )
        steps = math.ceil(trainer.estimated_stepping_batches / trainer.max_epochs)
        known = {"epochs": trainer.max_epochs, "steps_per_epoch": steps}
    if "max_lr" in factory.keywords:
        # OneCycleLR sets each group's rate from max_lr: keep the ratios of layer_decay.
        top, peak = optimizer.param_groups[0]["lr"], factory.keywords["max_lr"]
        known["max_lr"] = [peak * group["lr"] / top for group in optimizer.param_groups]
        wanted = {*wanted, "max_lr"}
    scheduler = factory(optimizer, **{key: value for key, value in known.items() if key in wanted})
    return {"scheduler": scheduler, "interval": interval}


def cosine(
    optimizer, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0, min_lr_ratio=0.0
) -> LambdaLR:
    """Each group's learning rate rises linearly over `warmup_epochs`, then follows half a
    cosine down to `min_lr_ratio` times it at the end of the run; stepped every batch.

    One `LambdaLR` rather than torch's `SequentialLR` of `LinearLR` and `CosineAnnealingLR`:
    the parameter groups that `lp_ft` and `gradual` add during training can join it
    (`src.training.finetuning.add_group`), which the chained schedulers cannot.
    """
    total, warmup = epochs * steps_per_epoch, round(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
