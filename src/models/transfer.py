"""The transfer-learning LightningModule: a pretrained backbone with a new classification head.

The recipe arrives as configuration, one `_target_` dict per part, and is built here: the head
(`conf/head`), the loss (`conf/loss`), extra metrics (`conf/metrics`), the optimizer
(`conf/optimizer`) and the learning-rate schedule (`conf/scheduler`). They are saved with the
weights as hyper-parameters, so a checkpoint knows its head and how it was trained.
`freeze_backbone=True` is the tutorial's "ConvNet as fixed feature extractor"; the strategies
that unfreeze the backbone in stages (`lp_ft`, `gradual`) are callbacks in
`src.training.finetuning`.
"""

import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from functools import cached_property

import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.nn import functional as F
from torchmetrics import MaxMetric, MeanMetric, MetricCollection, MinMetric
from torchmetrics.classification import MulticlassAccuracy

from src.models.backbone import build_backbone
from src.models.metrics import require_monitored, split_metrics

# Lightning warns of modules in eval mode; a frozen backbone's are on purpose (see `train`).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
# Raised inside Lightning by a torch pytree change; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
# The tutorial's head and loss: what a checkpoint without these hyper-parameters was built with.
LINEAR_HEAD = {"_target_": "torch.nn.Linear"}
CROSS_ENTROPY = {"_target_": "torch.nn.functional.cross_entropy", "_partial_": True}


class TransferLearningModel(LightningModule):
    """A backbone and a new head of `num_classes` outputs.

    The backbone's keys are those of `conf/model/resnet18.yaml` (which says what each does);
    the recipe's parts are `_target_` dicts of their config groups, built here: `head` with
    `in_features` (the backbone's width) and `out_features`; `loss` a function
    `(logits, targets, weight=None)`, whose targets are class indices or, with batch mixing,
    probabilities; `optimizer` a partial called with the parameter groups; `scheduler` (None:
    a constant rate) see `src.models.schedulers`; `metrics` more torchmetrics metrics logged
    for val and test (`src.models.metrics`). `class_names` and `preprocessing` (what the
    inputs went through, `Preprocessing.as_dict()`) are saved so that every command that
    loads the checkpoint names the classes and prepares images as training did. `monitor`
    picks the best checkpoint; its best-so-far is logged as `<monitor>_best`.

    A frozen backbone gets no gradients and its BatchNorm layers stay in eval mode, so their
    running statistics never change (the tutorial's `model.train()` quietly updates them).
    Class weights weigh the training loss only: val/loss and test/loss stay the plain
    cross-entropy, comparable between runs.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        backbone: str = "resnet18",
        weights: str | None = "IMAGENET1K_V1",
        weights_by_position: bool = False,
        backbone_kwargs: dict | None = None,
        freeze_backbone: bool = False,
        channels_last: bool = False,
        layer_decay: float = 1.0,
        class_weights: Sequence[float] | None = None,
        head: dict | None = None,
        loss: dict | None = None,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        metrics: dict | None = None,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
        preprocessing: dict | None = None,
    ) -> None:
        super().__init__()
        # Plain lists and dicts (not OmegaConf's) keep the checkpoint loadable with
        # `weights_only=True`; save_hyperparameters reads these locals.
        class_names = [str(name) for name in class_names] if class_names else None
        class_weights = None if class_weights is None else [float(w) for w in class_weights]
        backbone_kwargs, preprocessing = plain(backbone_kwargs) or {}, plain(preprocessing)
        head, loss = plain(head) or LINEAR_HEAD, plain(loss) or CROSS_ENTROPY
        optimizer, scheduler, metrics = plain(optimizer), plain(scheduler) or None, plain(metrics)
        self.save_hyperparameters()
        self.channels_last = channels_last
        self.layer_decay = layer_decay

        by_position = weights_by_position
        self.backbone, width = build_backbone(backbone, weights, backbone_kwargs, by_position)
        self.head = instantiate(head, in_features=width, out_features=num_classes)
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)

        self.loss = instantiate(loss)
        # Derived from the data and saved in the hyper-parameters, not in the state dict:
        # checkpoints with and without class weights load into either model.
        weight = None if class_weights is None else torch.tensor(class_weights)
        self.register_buffer("class_weight", weight, persistent=False)
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        names = class_names or [str(i) for i in range(num_classes)]
        self.val_metrics = split_metrics("val", names, metrics)
        self.test_metrics = split_metrics("test", names, metrics)
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # resuming keeps the best-so-far
        require_monitored(monitor, monitor_mode, self.val_metrics, names)
        self.monitor = monitor
        self.monitor_best = None  # the running best of `monitor` (resuming continues it)
        if monitor != "val/acc":
            self.monitor_best = MaxMetric() if monitor_mode == "max" else MinMetric()
            self.monitor_best.persistent(True)

    @cached_property
    def stages(self) -> list:
        """The backbone's stages, input side first (`src.models.stages`): what `layer_decay`,
        `lp_ft` and `gradual` work on; computed when first asked for."""
        from src.models.stages import backbone_stages

        return backbone_stages(self.backbone)

    @property
    def backbone_frozen(self) -> bool:
        """True while no backbone parameter trains (`frozen`, and the first phase of `lp_ft`
        and `gradual`)."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    def train(self, mode: bool = True) -> "TransferLearningModel":
        """Like `nn.Module.train`, but frozen stages of the backbone always stay in eval mode:
        their BatchNorm statistics stay fixed and their dropout is off."""
        super().train(mode)
        if mode and hasattr(self, "backbone"):
            if self.backbone_frozen:
                self.backbone.eval()
            elif "stages" in self.__dict__:  # a staged strategy opened some of them
                for stage in self.stages:
                    if not stage.trains():
                        for module in stage.modules:
                            module.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone output (N, width) for a batch of normalised images (N, 3, H, W)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad() if self.backbone_frozen else nullcontext():
            return self.backbone(images)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Class logits for images (N, 3, H, W), or for backbone features (N, width) that
        `data.cache_features` computed once for a frozen backbone."""
        return self.head(inputs if inputs.ndim == 2 else self.features(inputs))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        weight = {} if self.class_weight is None else {"weight": self.class_weight}
        loss = self.loss(logits, targets, **weight)
        self.train_loss.update(loss.detach(), weight=len(targets))
        # Mixed batches have probabilities as targets: the largest counts as the label.
        labels = targets if targets.ndim == 1 else targets.argmax(dim=1)
        self.train_acc.update(logits.detach(), labels)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss.compute(), sync_dist=True)
        self.log("train/acc", self.train_acc.compute(), sync_dist=True)
        self.train_loss.reset()
        self.train_acc.reset()

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Update the validation metrics; the logits are returned for callbacks (the figures
        reuse those of the best checkpoint's final validation)."""
        return self.update_metrics(batch, self.val_loss, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        """Log the metrics over the whole validation split, and the best so far of val/acc and
        of the monitored metric."""
        metrics = self.log_metrics("val", self.val_loss, self.val_metrics)
        # The sanity check before training sees two batches only; it must not set the best.
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(metrics["val/acc"])
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)
        if self.monitor_best is not None:
            self.monitor_best.update(metrics[self.monitor])
            self.log(f"{self.monitor}_best", self.monitor_best.compute(), sync_dist=True)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Continue from a checkpoint saved with another `monitor` (`ckpt_path=`, or `resume=`
        with a new monitor): this run's best of its own metric starts afresh."""
        state_dict = checkpoint["state_dict"]
        upgrade_state_dict(state_dict)
        saved = (checkpoint.get("hyper_parameters") or {}).get("monitor", "val/acc")
        if saved != self.monitor:  # the checkpoint's best-so-far (if any) is this model's fresh one
            fresh = {k: v for k, v in self.state_dict().items() if k.startswith("monitor_best.")}
            for key in [key for key in state_dict if key.startswith("monitor_best.")]:
                del state_dict[key]
            state_dict.update(fresh)

    def test_step(self, batch, batch_idx: int) -> None:
        self.update_metrics(batch, self.test_loss, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        """Log test/loss and the test metrics over the whole test split (`src.train` tests the
        best checkpoint once, after training)."""
        self.log_metrics("test", self.test_loss, self.test_metrics)

    def update_metrics(self, batch, loss: MeanMetric, metrics: MetricCollection) -> torch.Tensor:
        """Add a batch to a split's loss and metrics (validation and test alike); return the
        batch's logits. The loss is the plain cross-entropy, comparable between recipes."""
        images, labels = batch
        logits = self(images)
        loss.update(F.cross_entropy(logits, labels), weight=labels.numel())
        metrics.update(logits, labels)
        return logits.detach()

    def log_metrics(self, stage: str, loss: MeanMetric, metrics: MetricCollection) -> dict:
        """Log `stage`/loss and the split's metrics over the whole split, reset them, return
        the logged values."""
        values = {f"{stage}/loss": loss.compute(), **metrics.compute()}
        self.log_dict(values, sync_dist=True)
        loss.reset()
        metrics.reset()
        return values

    def configure_optimizers(self):
        """The optimizer over the parameters that train now, and the schedule; with
        `layer_decay` < 1, one parameter group per backbone stage (named, so the learning-rate
        monitor shows each)."""
        from src.models.schedulers import lightning_scheduler

        if not self.hparams.optimizer:
            raise RuntimeError("TransferLearningModel needs an optimizer config to train.")
        if self.layer_decay == 1:
            groups = [{"params": [p for p in self.parameters() if p.requires_grad]}]
        else:
            from src.models.stages import stage_lr_scales

            groups = [{"params": list(self.head.parameters()), "name": "head", "scale": 1.0}]
            scales = stage_lr_scales(len(self.stages), self.layer_decay)
            for stage, scale in reversed(list(zip(self.stages, scales, strict=True))):
                params = [p for p in stage.params if p.requires_grad]
                if params:
                    groups.append(
                        {"params": params, "name": f"backbone.{stage.name}", "scale": scale}
                    )
        optimizer = instantiate(self.hparams.optimizer)(params=groups)
        for group in optimizer.param_groups:
            group["lr"] *= group.pop("scale", 1.0)
        if self.hparams.scheduler is None:
            return optimizer
        # (the Trainer, when attached: schedules planned over the run ask it for their length)
        schedule = lightning_scheduler(self.hparams.scheduler, optimizer, self._trainer)
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def upgrade_state_dict(state_dict: dict) -> None:
    """Rename the head of a checkpoint from before heads were configurable (`fc.*`)."""
    if not any(key.startswith("head.") for key in state_dict):
        for key in [key for key in state_dict if key.startswith("fc.")]:
            state_dict["head." + key[len("fc.") :]] = state_dict.pop(key)


def plain(value):
    """A config value as plain dicts and lists (what a `weights_only` checkpoint can hold)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value
