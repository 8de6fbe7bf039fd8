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
    """At the start of fitting, replace the datamodule's images by the backbone's features.

    `train=False` (what `src.train` uses for every frozen run without `data.cache_features`)
    caches the validation images only, whose transform is fixed anyway, so training keeps
    its augmentation and every number stays what running the backbone in each epoch gives:
    the features are computed in the validation loader's batch size and precision, without
    drawing from the run's random numbers. Skipped when `trainer.limit_val_batches` cuts
    validation short (a smoke run would pay for a whole pass it never makes).
    """

    def __init__(self, train: bool = True) -> None:
        self.train = train

    def on_fit_start(self, trainer, pl_module) -> None:
        # The config check (src.training.config_checks) already required a frozen backbone.
        datamodule = trainer.datamodule
        context = trainer.precision_plugin.forward_context
        device = pl_module.device
        if self.train:
            datamodule.use_features(
                train=extract_features(pl_module.features, datamodule.train_set, device, context),
                val=extract_features(pl_module.features, datamodule.val_set, device, context),
            )
            return
        limit = trainer.limit_val_batches
        if not (isinstance(limit, float) and limit == 1.0):
            return
        with torch.random.fork_rng(devices=[]):  # a loader's start draws a random seed
            val = extract_features(
                pl_module.features, datamodule.val_set, device, context, datamodule.batch_size
            )
        datamodule.use_features(val=val)


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
