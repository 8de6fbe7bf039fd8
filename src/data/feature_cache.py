"""Backbone features of un-augmented images, computed once for a frozen backbone.

A frozen backbone maps each image to the same 512 numbers in every epoch; with train
augmentation switched off, computing them once and training the head on them gives the
same updates as running the backbone every step, at a fraction of the cost.
"""

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset


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
