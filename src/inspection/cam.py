"""Where the network looks: class activation maps of the best checkpoint's validation images,
the run figure `cam.png` (`figures.cam=true`; the grad-cam package of the [cam] extra).

Grad-CAM weighs a layer's activations by the gradient of the predicted class's score. The
layer is found by running one image through the backbone: for a CNN, its last top-level part
whose output is still a map (N, C, H, W); for a vision transformer (N, tokens, C), the first
norm of its last block, whose patch tokens still reach the class token through attention
(after it, only the class token feeds the head and the patch tokens get no gradient).
"""

import math

import torch
from torch import nn


def cam_figure(model, predictions, dataset, pre, indices: list[int]):
    """The images of `indices` with the map of their predicted class laid over them,
    titled with prediction and truth (wrong ones in red)."""
    from src.inspection import figures

    images = torch.stack([dataset[i][0] for i in indices])
    classes = [int(predictions.preds[i]) for i in indices]
    shown = overlays(model, images, classes, pre)
    titles, colors = figures.labelled(predictions, indices)
    title = "Grad-CAM of the predicted class: highest-loss images, then right ones"
    return figures.image_grid(shown, titles, None, colors, suptitle=title)


def overlays(model, images: torch.Tensor, classes: list[int], pre) -> list[torch.Tensor]:
    """Each image (normalised by `pre`) half and half with the Grad-CAM heat map of its class
    (grad-cam's `show_cam_on_image`), as (3, H, W) pixels in [0, 1]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = model.float().eval()
    layer, reshape = target_layer(model.backbone, images[:1])
    targets = [ClassifierOutputTarget(c) for c in classes]
    with torch.enable_grad(), GradCAM(model, [layer], reshape_transform=reshape) as cam:
        maps = cam(input_tensor=images, targets=targets)
    return [
        torch.from_numpy(
            show_cam_on_image(pre.denormalize(image).numpy(), heat, use_rgb=True)
        ).permute(2, 0, 1)
        / 255.0
        for image, heat in zip(images, maps, strict=True)
    ]


def target_layer(backbone: nn.Module, image: torch.Tensor):
    """(the layer Grad-CAM reads, the reshape of its tokens into a map or None); see the
    module docstring."""
    outputs: dict[nn.Module, tuple] = {}

    def record(module, inputs, output) -> None:
        outputs.setdefault(module, tuple(getattr(output, "shape", ())))

    hooks = [m.register_forward_hook(record) for m in backbone.modules() if m is not backbone]
    with torch.no_grad():
        backbone(image)
    for hook in hooks:
        hook.remove()
    maps = [m for m in backbone.children() if m in outputs and len(outputs[m]) == 4]
    maps = [m for m in maps if outputs[m][2] > 1 and outputs[m][3] > 1]
    if maps:
        return maps[-1], None
    norms = [m for m in outputs if isinstance(m, nn.LayerNorm) and len(outputs[m]) == 3]
    if len(norms) >= 3:
        side = math.isqrt(outputs[norms[-3]][1])  # of the tokens
        # (N, tokens, C) -> (N, C, side, side): the patch tokens, without the class token (and
        # any other tokens before them), laid out as the image grid.
        return norms[-3], lambda x: x[:, -side * side :].unflatten(1, (side, side)).movedim(-1, 1)
    raise ValueError(
        f"{type(backbone).__name__} has neither a part whose output is a (N, C, H, W) map nor "
        "transformer blocks with LayerNorms: no layer for Grad-CAM."
    )
