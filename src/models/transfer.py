"""The transfer-learning LightningModule: a pretrained backbone with a new classification head.

`freeze_backbone=False` is the tutorial's "finetuning the ConvNet"; `True` is its
"ConvNet as fixed feature extractor", where only the new `fc` layer learns. The backbone is
any torchvision or timm classification model (`src.models.backbone`); the strategies that
unfreeze it in stages (`lp_ft`, `gradual`) are callbacks in `src.training.finetuning`.
"""

from collections.abc import Callable, Sequence

import torch
from lightning.pytorch import LightningModule
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torch.nn import functional as F
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from src.models.backbone import build_backbone
from src.models.metrics import best_so_far, require_monitored, restart_best, split_metrics
from src.models.stages import backbone_stages, stage_lr_scales


class TransferLearningModel(LightningModule):
    """A backbone + a new `fc` of `num_classes` outputs, trained with cross-entropy.

    Args:
        num_classes: outputs of the new head (the datamodule's class count).
        class_names: label names, saved in the checkpoint so prediction needs no data folder.
        weights: a weights name of the backbone (`IMAGENET1K_V1`, `DEFAULT`, a timm tag), a
            path to a weights file, or `None` (random init).
        weights_by_position: a weights file whose key names differ from the architecture's is
            loaded by the order of its tensors (`src.models.backbone.load_local_weights`).
        preprocessing: what the inputs went through (`Preprocessing.as_dict()` of
            `src.data.transforms`), saved in the checkpoint so that every command that loads
            it prepares images the same way.
        freeze_backbone: train only the head; the backbone gets no gradients and its
            BatchNorm layers stay in eval mode, so their running statistics never change.
            (The tutorial's `model.train()` quietly keeps updating them.)
        optimizer: a partial optimizer, called with the trainable parameters only.
        scheduler: a partial LR scheduler, stepped once per epoch.
        channels_last: store conv weights and inputs NHWC, which the CPU and GPU conv kernels
            run faster.
        backbone: a torchvision model name (`resnet18`, `convnext_tiny`, ...) or
            `timm/<name>`; saved in the checkpoint, so evaluation rebuilds the same network.
        backbone_kwargs: extra constructor arguments of the backbone (a ViT's image size).
        layer_decay: each backbone stage learns at `layer_decay` times the learning rate of
            the stage above it; the top stage at the head's rate. 1.0 = one rate for all.
        class_weights: one weight per class for the training loss (`model.class_weights`;
            `src.train` turns `balanced` into numbers from the training counts). val/loss and
            test/loss stay the plain cross-entropy, comparable between runs.
        monitor, monitor_mode: the validation metric that picks the best checkpoint; besides
            `val/acc_best`, its best-so-far is logged as `<monitor>_best`.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: list[str] | None = None,
        weights: str | None = "IMAGENET1K_V1",
        weights_by_position: bool = False,
        freeze_backbone: bool = False,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        channels_last: bool = True,
        backbone: str = "resnet18",
        backbone_kwargs: dict | None = None,
        layer_decay: float = 1.0,
        class_weights: Sequence[float] | None = None,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
        preprocessing: dict | None = None,
    ) -> None:
        super().__init__()
        # Plain lists and dicts (not OmegaConf's) keep the checkpoint loadable with
        # `weights_only=True`; save_hyperparameters reads these locals.
        class_names = [str(name) for name in class_names] if class_names else None
        class_weights = None if class_weights is None else [float(w) for w in class_weights]
        backbone_kwargs = plain(backbone_kwargs) or {}
        preprocessing = plain(preprocessing)
        # Optimizer/scheduler factories are config objects, not model state: keeping them
        # out of the checkpoint lets it load with `weights_only=True`.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.channels_last = channels_last
        self.layer_decay = layer_decay

        self.backbone, width = build_backbone(
            backbone, weights, backbone_kwargs, weights_by_position
        )
        self.fc = nn.Linear(width, num_classes)
        # A plain list, not a ModuleList: the stages' modules are registered in the backbone.
        self.stages = backbone_stages(self.backbone)
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)

        self.criterion = nn.CrossEntropyLoss()
        if class_weights is not None:
            # Derived from the data and saved in the hyper-parameters, not in the state
            # dict: checkpoints with and without class weights load into either model.
            if len(class_weights) != num_classes:
                raise ValueError(f"{len(class_weights)} class weights for {num_classes} classes")
            weight = torch.tensor(class_weights)
            self.criterion.register_buffer("weight", weight, persistent=False)
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        names = class_names or [str(i) for i in range(num_classes)]
        self.val_metrics = split_metrics("val", names)
        self.test_metrics = split_metrics("test", names)
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # resuming keeps the best-so-far
        require_monitored(monitor, names)
        self.monitor = monitor
        self.monitor_best = None if monitor == "val/acc" else best_so_far(monitor_mode)

    @property
    def backbone_frozen(self) -> bool:
        """True while no backbone parameter trains (`frozen`, and the first phase of `lp_ft`
        and `gradual`)."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    def train(self, mode: bool = True) -> "TransferLearningModel":
        """Like `nn.Module.train`, but frozen stages of the backbone always stay in eval mode:
        their BatchNorm statistics stay fixed and their dropout is off."""
        super().train(mode)
        if mode and hasattr(self, "stages"):
            if self.backbone_frozen:
                self.backbone.eval()
            for stage in self.stages:
                if not stage.trains():
                    for module in stage.modules:
                        module.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone output (N, width) for a batch of normalised images (N, 3, H, W)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.backbone_frozen:
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Class logits for images (N, 3, H, W), or for backbone features (N, width) that
        `data.cache_features` computed once for a frozen backbone."""
        features = inputs if inputs.ndim == 2 else self.features(inputs)
        return self.fc(features)

    def stage_learning_rates(self, top_lr: float) -> list[float]:
        """Learning rate of each backbone stage (input side first) when the top one gets
        `top_lr`: `layer_decay` times smaller per stage below."""
        return [top_lr * s for s in stage_lr_scales(len(self.stages), self.layer_decay)]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        self.train_loss.update(loss.detach(), weight=labels.numel())
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
        saved = (checkpoint.get("hyper_parameters") or {}).get("monitor", "val/acc")
        if saved != self.monitor:
            restart_best(checkpoint["state_dict"], "monitor_best.", self.monitor_best)

    def test_step(self, batch, batch_idx: int) -> None:
        self.update_metrics(batch, self.test_loss, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        """Log test/loss, test/acc, test/f1_macro, test/balanced_acc and test/class_acc/<class>
        over the whole test split (`src.train` tests the best checkpoint once, after training)."""
        self.log_metrics("test", self.test_loss, self.test_metrics)

    def update_metrics(self, batch, loss: MeanMetric, metrics: MetricCollection) -> torch.Tensor:
        """Add a batch to a split's loss and metrics (validation and test alike); return the
        batch's logits. The loss is the plain cross-entropy, without class weights."""
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
        """The optimizer over the parameters that train now; with `layer_decay` < 1, one
        parameter group per backbone stage (named, so the LR logger shows each)."""
        if self.optimizer_factory is None:
            raise RuntimeError("TransferLearningModel needs an optimizer factory to train.")
        if self.layer_decay == 1:
            groups = [{"params": [p for p in self.parameters() if p.requires_grad]}]
        else:
            groups = [{"params": list(self.fc.parameters()), "name": "head", "scale": 1.0}]
            scales = stage_lr_scales(len(self.stages), self.layer_decay)
            for stage, scale in reversed(list(zip(self.stages, scales, strict=True))):
                params = [p for p in stage.params if p.requires_grad]
                if params:
                    groups.append(
                        {"params": params, "name": f"backbone.{stage.name}", "scale": scale}
                    )
        optimizer = self.optimizer_factory(params=groups)
        for group in optimizer.param_groups:
            group["lr"] *= group.pop("scale", 1.0)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }


def plain(value):
    """A config value as plain dicts and lists (what a `weights_only` checkpoint can hold)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value
