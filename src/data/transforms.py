"""How an image becomes a network input: the preprocessing the backbone's weights expect, the
training augmentation (`conf/augment`), and the one builder of the transforms that every
command (train, eval, predict, export, figures) applies.
"""

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace

import torch
from torchvision.transforms import v2

from src.errors import UserError

# ImageNet channel statistics: what torchvision's weights (and random init) are normalised with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
# Test-time augmentations of src.eval and src.predict: none, or the image and its mirror.
TTA = (None, "flip")


@dataclass(frozen=True)
class Preprocessing:
    """What the weights were trained to see: the shorter side resized to `resize_size` with
    `interpolation` (antialiased), the central `image_size` square, pixels scaled to [0, 1],
    then normalised with `mean` and `std` per channel.

    The values come from the backbone's weights (`src.models.backbone.weights_preprocessing`)
    and are saved in every checkpoint, so that evaluation, prediction, export and the figures
    reproduce them from the checkpoint alone.
    """

    image_size: int = 224
    resize_size: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(
                f"Invalid data.interpolation={self.interpolation!r}: use one of "
                f"{', '.join(INTERPOLATIONS)}, or null for the weights' own."
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UserError(
                f"Invalid data.mean={list(self.mean)} / data.std={list(self.std)}: give three "
                "numbers each (one per RGB channel, std > 0), or null for the weights' own."
            )
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @classmethod
    def resolve(cls, weights: dict | None = None, **given) -> "Preprocessing":
        """The weights' preprocessing (`None`: ImageNet's, as for random init) with the values
        in `given` that are not None on top. An `image_size` given without `resize_size`
        keeps the weights' crop fraction (224 of 256: 0.875)."""
        base = cls(**(weights or {}))
        given = {key: value for key, value in given.items() if value is not None}
        if "image_size" in given and "resize_size" not in given:
            given["resize_size"] = round(given["image_size"] * base.resize_size / base.image_size)
        return replace(base, **given)

    @classmethod
    def fields_of(cls, values: dict) -> dict:
        """The entries of `values` that are fields (an exported model's metadata has more)."""
        return {field.name: values[field.name] for field in fields(cls) if field.name in values}

    def as_dict(self) -> dict:
        """Plain values for a checkpoint's hyper-parameters and an exported model's metadata."""
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @property
    def interpolation_mode(self) -> v2.InterpolationMode:
        return v2.InterpolationMode(self.interpolation)

    def eval_transform(self) -> v2.Compose:
        """Validation, test, `src.eval`, `src.predict`, `src.export` and the figures."""
        return build_transform(self)

    def denormalize(self, image: torch.Tensor) -> torch.Tensor:
        """A normalised (3, H, W) tensor back to pixels in [0, 1], (H, W, 3), for display."""
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (image.float() * std + mean).clamp(0, 1).permute(1, 2, 0)


@dataclass
class Augment:
    """The training augmentation (`conf/augment`; the tutorial's by default).

    A random crop of `scale` of the image's area (aspect ratio 3/4 to 4/3) resized to the
    input size, a horizontal flip with probability `hflip`, then `policy` (any torchvision v2
    transform of an image: `TrivialAugmentWide`, `RandAugment`, ...); after normalisation,
    random erasing of a patch with probability `random_erasing`. `mixup_alpha` and
    `cutmix_alpha` > 0 mix the images of each training batch (torchvision's MixUp, CutMix;
    one of the two per batch when both are set), whose labels become class probabilities.
    """

    scale: Sequence[float] = (0.08, 1.0)
    hflip: float = 0.5
    policy: Callable | None = None
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def steps(self, pre: Preprocessing) -> tuple[list, list]:
        """(steps on the image, steps on the normalised tensor)."""
        crop = v2.RandomResizedCrop(
            pre.image_size, scale=tuple(self.scale), interpolation=pre.interpolation_mode
        )
        image = [crop, v2.RandomHorizontalFlip(self.hflip), *([self.policy] if self.policy else [])]
        return image, [v2.RandomErasing(self.random_erasing)] if self.random_erasing else []

    def mix_batches(self, num_classes: int) -> Callable | None:
        """The batch transform of `mixup_alpha` / `cutmix_alpha` for (images, labels) batches,
        or None when both are 0."""
        mixes = [mix(alpha=alpha, num_classes=num_classes)
                 for mix, alpha in ((v2.MixUp, self.mixup_alpha), (v2.CutMix, self.cutmix_alpha))
                 if alpha > 0]  # fmt: skip
        return None if not mixes else mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


def build_transform(pre: Preprocessing, augment: Augment | None = None) -> v2.Compose:
    """The one builder of network inputs: `augment`'s random steps (training) or the
    evaluation resize of the shorter side and centre crop, then the pixels as a float tensor
    normalised by `pre`, then `augment`'s steps on that tensor."""
    if augment is None:
        resize = v2.Resize(pre.resize_size, pre.interpolation_mode, antialias=True)
        image, tensor = [resize, v2.CenterCrop(pre.image_size)], []
    else:
        image, tensor = augment.steps(pre)
    to_tensor = [
        v2.ToImage(),
        # ToImage gives a (3, H, W) view of pixels laid out channel-last; converting and
        # normalising in that layout took longer than decoding a 500-pixel JPEG.
        v2.Lambda(torch.Tensor.contiguous),
        v2.ToDtype(torch.float32, scale=True),
        # In place on the fresh float tensor of ToDtype: one allocation less per image.
        v2.Normalize(list(pre.mean), list(pre.std), inplace=True),
    ]
    return v2.Compose([*image, *to_tensor, *tensor])


def with_tta(classify, tta: str | None):
    """`classify` (images -> class probabilities), or with `tta="flip"` the mean of its
    probabilities for each image and its mirror image: test-time augmentation. (ttach would
    average raw outputs, not probabilities; here it is one line.)"""
    if tta not in TTA:
        raise UserError(f"Invalid tta={tta!r}: use null (none) or flip.")
    if tta is None:
        return classify
    return lambda images: (classify(images) + classify(images.flip(-1))) / 2
