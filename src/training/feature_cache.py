"""Backbone features of un-augmented images, computed once while the backbone is frozen.

A frozen backbone maps each image to the same numbers in every epoch; with train
augmentation switched off (`data.cache_features=true` does that), computing them once and
training the head on them gives the same updates as running the backbone every step, at a
fraction of the cost. With `strategy=frozen` that is the whole run; with `lp_ft` and
`gradual` it is the epochs before the backbone starts training, after which the images
(with their augmentation) are served again. The callback is the glue between model and
data: the datamodule never sees the model, it is only handed the feature datasets to serve.
"""

from collections.abc import Callable

import torch
from lightning.pytorch import Callback
from torch.utils.data import DataLoader, Dataset, TensorDataset

from src.training.finetuning import StagedFinetuning
from src.training.seeding import next_epoch


class CacheFeatures(Callback):
    """At the start of fitting, replace the datamodule's images by the backbone's features,
    for as long as the backbone stays frozen (attached by the strategies' configs).

    `train` (`data.cache_features`): training images too, whose augmentation is then off.
    `val` alone (`strategy=frozen` without `data.cache_features`): the validation images,
    whose transform is fixed anyway, so training keeps its augmentation and every number
    stays what running the backbone in each epoch gives: the features are computed in the
    validation loader's batch size and precision, without drawing from the run's random
    numbers. Skipped when `trainer.limit_val_batches` cuts validation short (a smoke run
    would pay for a whole pass it never makes). Neither: the callback does nothing.
    """

    def __init__(self, train: bool = True, val: bool = True) -> None:
        self.train = train
        self.val = val
        self.first_epoch = 0  # the epoch this fit starts at (a resumed run's next epoch)
        self.until: int | None = None  # the first epoch that trains the backbone
        self.saved_reload: int | None = None

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.first_epoch = next_epoch(checkpoint)

    def on_fit_start(self, trainer, pl_module) -> None:
        if not (self.train or self.val):
            return
        # The config check (src.training.config_checks) already required a frozen start.
        staged = [c for c in trainer.callbacks if isinstance(c, StagedFinetuning)]
        self.until = staged[0].head_only_epochs if staged else None
        datamodule, limit = trainer.datamodule, trainer.limit_val_batches
        if self.until is not None and self.first_epoch >= self.until:
            datamodule.use_images()  # resumed after the frozen epochs
            return
        if not self.train and not (isinstance(limit, float) and limit == 1.0):
            return  # validation cut short
        features, device, training = pl_module.features, pl_module.device, pl_module.training
        context, val_set = trainer.precision_plugin.forward_context, datamodule.val_set
        pl_module.eval()
        if self.train:
            train = extract_features(features, datamodule.train_set, device, context)
            datamodule.use_features(train, extract_features(features, val_set, device, context))
        else:
            with torch.random.fork_rng(devices=[]):  # a loader's start draws a random seed
                val = extract_features(features, val_set, device, context, datamodule.batch_size)
            datamodule.use_features(val=val)
        pl_module.train(training)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.until is not None and trainer.current_epoch + 1 == self.until:
            # The backbone trains from the next epoch: serve images again, and have Lightning
            # ask for new train and val loaders once (it keeps them otherwise).
            trainer.datamodule.use_images()
            self.saved_reload = trainer.reload_dataloaders_every_n_epochs
            trainer.reload_dataloaders_every_n_epochs = 1

    def on_validation_start(self, trainer, pl_module) -> None:
        # The validation loader is rebuilt before this hook, the train loader before it too.
        if self.saved_reload is not None and trainer.current_epoch >= (self.until or 0):
            trainer.reload_dataloaders_every_n_epochs = self.saved_reload
            self.saved_reload = None


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
