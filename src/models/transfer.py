"""The transfer-learning LightningModule: a ResNet18 backbone with a new classification head.

`freeze_backbone=False` is the tutorial's "finetuning the ConvNet"; `True` is its
"ConvNet as fixed feature extractor", where only the new `fc` layer learns.
"""

from collections.abc import Callable, Sequence

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.nn import functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from src.models.metrics import best_so_far, require_monitored, restart_best, split_metrics
from src.models.resnet import build_resnet18


class TransferLearningModel(LightningModule):
    """ResNet18 + a new `fc` of `num_classes` outputs, trained with cross-entropy.

    Args:
        num_classes: outputs of the new head (the datamodule's class count).
        class_names: label names, saved in the checkpoint so prediction needs no data folder.
        weights: torchvision weights name, path to a state-dict file, or `None` (random init).
        freeze_backbone: train only the head; the backbone gets no gradients and its
            BatchNorm layers stay in eval mode, so their running statistics never change.
            (The tutorial's `model.train()` quietly keeps updating them.)
        optimizer: a partial optimizer, called with the trainable parameters only.
        scheduler: a partial LR scheduler, stepped once per epoch.
        channels_last: store conv weights and inputs NHWC, which the CPU and GPU conv kernels
            run faster.
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
        freeze_backbone: bool = False,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        channels_last: bool = True,
        class_weights: Sequence[float] | None = None,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
    ) -> None:
        super().__init__()
        # Plain lists (not OmegaConf's ListConfig) keep the checkpoint loadable with
        # `weights_only=True`; save_hyperparameters reads these locals.
        class_names = [str(name) for name in class_names] if class_names else None
        class_weights = None if class_weights is None else [float(w) for w in class_weights]
        # Optimizer/scheduler factories are config objects, not model state: keeping them
        # out of the checkpoint lets it load with `weights_only=True`.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.freeze_backbone = freeze_backbone
        self.channels_last = channels_last

        backbone = build_resnet18(weights)
        self.fc = nn.Linear(backbone.fc.in_features, num_classes)
        backbone.fc = nn.Identity()
        self.backbone = backbone
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

    def train(self, mode: bool = True) -> "TransferLearningModel":
        """Like `nn.Module.train`, but a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone output (N, 512) for a batch of normalised images (N, 3, H, W)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.freeze_backbone:
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Class logits for images (N, 3, H, W), or for backbone features (N, 512) that
        `data.cache_features` computed once for a frozen backbone."""
        features = inputs if inputs.ndim == 2 else self.features(inputs)
        return self.fc(features)

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

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        """Log the metrics over the whole validation split, and the best so far of val/acc and
        of the monitored metric."""
        metrics = self._log_split("val", self.val_loss, self.val_metrics)
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
        self._evaluate(batch, self.test_loss, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        """Log test/loss, test/acc, test/f1_macro, test/balanced_acc and test/class_acc/<class>."""
        self._log_split("test", self.test_loss, self.test_metrics)

    def _evaluate(self, batch, loss: MeanMetric, metrics) -> None:
        """Add one batch to a split's plain cross-entropy (no class weights) and metrics."""
        images, labels = batch
        logits = self(images)
        loss.update(F.cross_entropy(logits, labels), weight=labels.numel())
        metrics.update(logits, labels)

    def _log_split(self, split: str, loss: MeanMetric, metrics) -> dict:
        """Log a split's loss and metrics over all its batches, then start them afresh."""
        values = {f"{split}/loss": loss.compute(), **metrics.compute()}
        self.log_dict(values, sync_dist=True)
        loss.reset()
        metrics.reset()
        return values

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("TransferLearningModel needs an optimizer factory to train.")
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=trainable)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
