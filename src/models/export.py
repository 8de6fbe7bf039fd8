"""Write a trained classifier as a file that runs without this template: ONNX or TorchScript.

The exported model is the checkpoint's network in fp32 followed by a softmax: normalised
images (N, 3, H, W) in, any N, class probabilities out. The class names and the
preprocessing travel inside the file (see `src.models.exported`, which reads them back).
"""

import io
import json
import logging
import warnings
from typing import IO

import torch
from torch import nn

from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from src.models.exported import INPUT_NAME, OUTPUT_NAME


class Probabilities(nn.Module):
    """The classifier as deployed: normalised images in, softmax probabilities out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).float().softmax(dim=1)


def preprocessing(image_size: int, resize_size: int, jpeg_draft: bool = False) -> dict:
    """What `src.data.transforms.val_transform` does to an image, for users of the file
    (`jpeg_draft`: the run read JPEGs in Pillow's draft mode, see `src.data.images`)."""
    return {
        "resize_size": resize_size,
        "image_size": image_size,
        "jpeg_draft": jpeg_draft,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "steps": (
            "RGB image (with jpeg_draft, JPEGs decoded at the smallest 1/2, 1/4 or 1/8 "
            "scale whose sides stay at least resize_size); resize the shorter side to "
            "resize_size (bilinear, antialiased); "
            "centre crop image_size x image_size; scale to [0, 1]; subtract mean and divide "
            "by std per channel; layout (N, 3, H, W) float32"
        ),
    }


def metadata(
    class_names: list[str], image_size: int, resize_size: int, jpeg_draft: bool = False
) -> dict[str, str]:
    """The JSON strings stored with the model (ONNX metadata, TorchScript extra files)."""
    return {
        "class_names": json.dumps(list(class_names)),
        "preprocessing": json.dumps(preprocessing(image_size, resize_size, jpeg_draft)),
    }


def export_model(model, fmt: str, f: IO[bytes], info: dict[str, str], image_size: int) -> None:
    """Write `model` as `fmt` ("onnx" or "torchscript") to the open file `f`.

    Both go through torch.export, which captures the network without running Lightning's
    hooks or properties (a LightningModule outside a Trainer cannot be traced by TorchScript).
    """
    module = Probabilities(model.float().eval()).eval()
    # Batch 2: an example batch of 1 would let the exporter fix the batch size at 1.
    example = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        if fmt == "onnx":
            f.write(onnx_bytes(module, example, info))
        else:
            f.write(torchscript_bytes(module, example, info))


def torchscript_bytes(module: nn.Module, example: torch.Tensor, info: dict[str, str]) -> bytes:
    """The TorchScript archive with a dynamic batch and `info` as extra files `<key>.json`:
    torch.export's graph of the module, traced."""
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch_dim()},))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but still what C++ and older
        # deployments load. The exported graph's shape assertions become constants: harmless.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(program.module(), example)
        torch.jit.save(traced, buffer, _extra_files={f"{k}.json": v for k, v in info.items()})
    return buffer.getvalue()


def batch_dim():
    return torch.export.Dim("batch", min=1)


def onnx_bytes(module: nn.Module, example: torch.Tensor, info: dict[str, str]) -> bytes:
    """The ONNX model (the torch.export-based exporter) with a dynamic batch and `info` as
    metadata, weights inline: one file (ONNX's limit for that is 2 GB)."""
    import onnx

    # The exporter's optimisation passes log every step at INFO; keep the console readable.
    for name in ("onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING)
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch_dim()},),
        verbose=False,
    )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, info)
    buffer = io.BytesIO()
    onnx.save_model(proto, buffer)
    return buffer.getvalue()
