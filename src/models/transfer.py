"""The transfer-learning LightningModule: a ResNet18 backbone with a new classification head.

`freeze_backbone=False` is the tutorial's "finetuning the ConvNet"; `True` is its
"ConvNet as fixed feature extractor", where only the new `fc` layer learns.
"""

from collections.abc import Callable

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

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
    ) -> None:
        super().__init__()
        # Plain lists (not OmegaConf's ListConfig) keep the checkpoint loadable with
        # `weights_only=True`; save_hyperparameters reads these locals.
        class_names = [str(name) for name in class_names] if class_names else None
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
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # resuming keeps the best-so-far

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

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Update the validation metrics; the logits are returned for callbacks (the figures
        reuse those of the best checkpoint's final validation)."""
        images, labels = batch
        logits = self(images)
        self.val_loss.update(self.criterion(logits, labels), weight=labels.numel())
        self.val_acc.update(logits, labels)
        return logits.detach()

    def on_validation_epoch_end(self) -> None:
        """Log loss and accuracy over the whole validation split, and the best accuracy so far."""
        acc = self.val_acc.compute()
        self.log("val/loss", self.val_loss.compute(), sync_dist=True)
        self.log("val/acc", acc, sync_dist=True)
        self.val_loss.reset()
        self.val_acc.reset()
        # The sanity check before training sees two batches only; it must not set the best.
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(acc)
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

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
