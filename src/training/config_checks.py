"""Reject configuration values that cannot work, before any data is loaded or model built.

Each check names the key to fix; the values a sweep may explore are left alone.
"""

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.errors import UserError
from src.models.metrics import check_monitor

STRATEGIES = ("finetune", "frozen")


def check_config(cfg: DictConfig) -> None:
    """Raise a `UserError` naming the first config key whose value cannot work."""
    require(cfg, "data.batch_size", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
    require(cfg, "data.num_workers", lambda v: v is None or v >= 0, "null or an integer >= 0")
    require(cfg, "model.optimizer.lr", lambda v: v > 0, "a number > 0")
    require(cfg, "model.optimizer.momentum", lambda v: v >= 0, "a number >= 0")
    require(cfg, "model.scheduler.step_size", lambda v: v >= 1, "an integer >= 1 (epochs)")
    require(cfg, "model.scheduler.gamma", lambda v: 0 < v <= 1, "a number in (0, 1]")
    require(cfg, "trainer.max_epochs", lambda v: v is None or v >= -1, "an integer (-1 = no limit)")
    require(cfg, "strategy.name", lambda v: v in STRATEGIES, f"one of {', '.join(STRATEGIES)}")
    if OmegaConf.select(cfg, "data.cache_features") and not cfg.strategy.freeze_backbone:
        raise UserError(
            "data.cache_features=true needs strategy=frozen: a backbone that trains changes "
            "its features every step, so they cannot be computed once."
        )
    check_weights_name(OmegaConf.select(cfg, "model.weights"))
    require(cfg, "data.sampler", lambda v: v in (None, "balanced"), "null (shuffle) or balanced")
    weights = "null, balanced or a list of numbers > 0"
    require(cfg, "model.class_weights", valid_class_weights, weights)
    if "monitor" in cfg:
        check_monitor(cfg.monitor, cfg.get("monitor_mode"))
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


def check_weights_name(weights: str | None) -> None:
    """A weights value that is not a path must be one of torchvision's ResNet18 names."""
    from torchvision.models import ResNet18_Weights

    from src.models.resnet import looks_like_path

    if weights is None or looks_like_path(str(weights)):
        return
    if weights not in ResNet18_Weights.__members__:
        names = ", ".join(ResNet18_Weights.__members__)
        raise UserError(
            f"Invalid model.weights={weights!r}: use one of {names}, a path to a .pth "
            "state-dict file, or null for random initialisation."
        )
