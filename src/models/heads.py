"""Classification heads beyond the tutorial's single `torch.nn.Linear` (`conf/head`).

A head is built with `in_features` (the backbone's feature width) and `out_features` (the
number of classes); every parameter it holds trains, in every strategy.
"""

from torch import nn


def mlp(in_features: int, out_features: int, hidden_features: int = 512, dropout: float = 0.2):
    """Linear, GELU, dropout, linear. (torchvision's `MLP` also drops out the logits, and
    timm's `Mlp` the hidden and the output layer alike.)"""
    return nn.Sequential(
        nn.Linear(in_features, hidden_features),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_features, out_features),
    )
