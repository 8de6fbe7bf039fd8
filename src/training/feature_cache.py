"""Backbone features of un-augmented images, computed once for a frozen backbone.

A frozen backbone maps each image to the same numbers in every epoch; with train
augmentation switched off (`data.cache_features=true` does that), computing them once and
training the head on them gives the same updates as running the backbone every step, at a
fraction of the cost. The callback is the glue between model and data: the datamodule
never sees the model, it is only handed the feature datasets to serve.
"""

from collections.abc import Callable

import torch
from lightning.pytorch import Callback
from torch.utils.data import DataLoader, Dataset, TensorDataset


class CacheFeatures(Callback):
    """At the start of fitting, replace the datamodule's images by the backbone's features."""

    def on_fit_start(self, trainer, pl_module) -> None:
        # The config check (src.training.config_checks) already required a frozen backbone.
        datamodule = trainer.datamodule
        context = trainer.precision_plugin.forward_context
        device = pl_module.device
        datamodule.use_features(
            train=extract_features(pl_module.features, datamodule.train_set, device, context),
            val=extract_features(pl_module.features, datamodule.val_set, device, context),
        )


@torch.no_grad()
def extract_features(
    features: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    device: torch.device,
    forward_context: Callable,
    batch_size: int = 64,
) -> TensorDataset:
    """Map every image of `dataset` through `features` once; keep the results on the CPU.

    `forward_context` is the Trainer's precision context (e.g. bf16 autocast), so the
    features match what the frozen backbone computes during training.
    """
    outputs, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        with forward_context():
            outputs.append(features(images.to(device)).float().cpu())
        labels.append(targets)
    return TensorDataset(torch.cat(outputs), torch.cat(labels))
