"""Reject configuration values that cannot work, before any data is loaded or model built.

Each check names the key to fix; the values a sweep may explore are left alone. The data.*
keys are checked by the datamodule's constructor, which also runs before any image is read.
"""

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.errors import UserError, require_extra


def check_config(cfg: DictConfig) -> None:
    """Raise a `UserError` naming the first config key whose value cannot work."""
    require(cfg, "optimizer.lr", lambda v: v > 0, "a number > 0")
    require(cfg, "optimizer.momentum", lambda v: v >= 0, "a number >= 0")
    require(cfg, "optimizer.weight_decay", lambda v: v >= 0, "a number >= 0")
    require(cfg, "scheduler.step_size", lambda v: v >= 1, "an integer >= 1 (epochs)")
    require(cfg, "scheduler.gamma", lambda v: 0 < v <= 1, "a number in (0, 1]")
    require(cfg, "scheduler.interval", lambda v: v in ("epoch", "step"), "epoch or step")
    require(cfg, "scheduler.warmup_epochs", lambda v: v >= 0, "a number >= 0 (epochs)")
    require(cfg, "loss.label_smoothing", lambda v: 0 <= v < 1, "a number in [0, 1)")
    require(cfg, "monitor_mode", lambda v: v in ("max", "min"), "max or min")
    require(cfg, "model.layer_decay", lambda v: 0 < v <= 1, "a number in (0, 1] (1 = off)")
    require(cfg, "trainer.max_epochs", lambda v: v is None or v >= -1, "an integer (-1 = no limit)")
    require(cfg, "strategy.backbone_lr_ratio", lambda v: v > 0, "a number > 0")
    require(cfg, "strategy.probe_epochs", is_count(0), "an integer >= 0 (epochs)")
    require(cfg, "strategy.unfreeze_every", is_count(1), "an integer >= 1 (epochs)")
    check_phases(cfg)
    if OmegaConf.select(cfg, "figures.cam"):
        require_extra("pytorch_grad_cam", "figures.cam=true")
    for tracker in ("mlflow", "wandb"):  # the trackers beyond CSV and TensorBoard are extras
        if OmegaConf.select(cfg, f"logger.{tracker}") is not None:
            require_extra(tracker, f"logger={tracker}")
    # Refuse Lightning strategies whose training processes are not runs of this command.
    strategy = OmegaConf.select(cfg, "trainer.strategy")
    if isinstance(strategy, str) and any(k in strategy for k in ("spawn", "fork", "notebook")):
        raise UserError(
            f"trainer.strategy={strategy} trains in processes started from this one, whose "
            "epochs and checkpoints it then does not see (summary.json would report none). "
            "Use trainer=ddp_cpu (2 processes on the CPU) or trainer=ddp (GPUs): Lightning's "
            "DDP starts every process as a run of this command."
        )
    # Cached features need a run that starts with a frozen backbone.
    name, probes = cfg.strategy.get("name"), cfg.strategy.get("probe_epochs", 0)
    probe = name == "lp_ft" and probes >= 1
    frozen_start = cfg.strategy.get("freeze_backbone") or probe or name == "gradual"
    if OmegaConf.select(cfg, "data.cache_features") and not frozen_start:
        raise UserError(
            "data.cache_features=true needs strategy=frozen, or a strategy that starts with "
            "a frozen backbone: lp_ft with strategy.probe_epochs >= 1, or gradual. A "
            "backbone that trains changes its features every step, so they cannot be "
            "computed once."
        )
    weights = "null, balanced or a list of numbers > 0"
    require(cfg, "model.class_weights", valid_class_weights, weights)
    if "monitor" in cfg:
        checkpoint_monitor = OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor")
        if checkpoint_monitor not in (None, cfg.monitor):
            raise UserError(
                f"callbacks.model_checkpoint.monitor={checkpoint_monitor} differs from "
                f"monitor={cfg.monitor}: set monitor={checkpoint_monitor} instead, so that the "
                "summary, the Result line and the sweep objective follow the same metric."
            )


def valid_class_weights(value) -> bool:
    if isinstance(value, ListConfig | list):
        return len(value) > 0 and all(not isinstance(w, bool) and w > 0 for w in value)
    return value is None or value == "balanced"


def is_count(minimum: int):
    return lambda v: isinstance(v, int) and v >= minimum


def check_phases(cfg: DictConfig) -> None:
    """`lp_ft` and `gradual` must leave the backbone some epochs to train in."""
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if max_epochs is None or max_epochs < 0:
        return  # no epoch limit
    probe = OmegaConf.select(cfg, "strategy.probe_epochs")
    if probe is not None and probe >= max_epochs:
        raise UserError(
            f"Invalid strategy.probe_epochs={probe}: with trainer.max_epochs={max_epochs} it "
            "leaves no epoch to fine-tune the backbone in. Use fewer probe epochs or more "
            "epochs, or strategy=frozen to train the head alone."
        )
    every = OmegaConf.select(cfg, "strategy.unfreeze_every")
    if every is not None and every >= max_epochs:
        raise UserError(
            f"Invalid strategy.unfreeze_every={every}: the first backbone stage would be "
            f"unfrozen at epoch {every}, but trainer.max_epochs={max_epochs} ends before it, so "
            "the backbone never trains. Use a smaller value, or strategy=frozen."
        )


def require(cfg: DictConfig, key: str, ok, expected: str) -> None:
    """Check `key` when the config has it (a swapped optimizer may have no `momentum`)."""
    missing = object()
    value = OmegaConf.select(cfg, key, default=missing)
    if value is missing:
        return
    try:
        valid = not isinstance(value, bool) and ok(value)
    except TypeError:
        valid = False
    if not valid:
        raise UserError(f"Invalid {key}={value!r}: it must be {expected}.")
