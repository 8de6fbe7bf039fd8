"""The tutorial's image transforms: augmentation for training, a fixed centre crop for val."""

import torch
from torchvision.transforms import v2

# ImageNet channel statistics; the pretrained backbone expects inputs normalised with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_normalized_tensor(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> list:
    return [
        v2.ToImage(),
        # ToImage gives a (3, H, W) view of the pixels laid out channel-last; converting and
        # normalising in that layout took longer than decoding a 500-pixel JPEG. The same
        # values, laid out as (3, H, W) first: 0.89x -> 0.99x the tutorial's loader per
        # worker (`python -m src.bench.loader`, see README "Speed").
        v2.Lambda(torch.Tensor.contiguous),
        v2.ToDtype(torch.float32, scale=True),
        # In place on the fresh float tensor of ToDtype: one allocation less per image.
        v2.Normalize(list(mean), list(std), inplace=True),
    ]


def train_transform(image_size: int = 224) -> v2.Compose:
    """RandomResizedCrop + horizontal flip, as in the tutorial."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            *_to_normalized_tensor(),
        ]
    )


def val_transform(
    image_size: int = 224, resize_size: int = 256, mean=IMAGENET_MEAN, std=IMAGENET_STD
) -> v2.Compose:
    """Resize the shorter side to `resize_size`, then take the central `image_size` square.
    (`mean`/`std`: those an exported model stores; they are the ImageNet ones.)"""
    return v2.Compose(
        [
            v2.Resize(resize_size, antialias=True),
            v2.CenterCrop(image_size),
            *_to_normalized_tensor(mean, std),
        ]
    )
