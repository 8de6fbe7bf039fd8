"""Write a trained classifier as a file that runs without this template: ONNX or TorchScript,
with the class names and the preprocessing inside (`src.models.exported` reads them back)."""

import json
import logging
import warnings
from typing import IO

import torch
from torch import nn

from src.models.exported import INPUT_NAME, OUTPUT_NAME


class Probabilities(nn.Module):
    """The classifier as deployed: normalised images (N, 3, H, W), any N, in; the network's
    outputs in fp32 through a softmax, class probabilities, out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).float().softmax(dim=1)


def metadata(class_names: list[str], preprocessing: dict, jpeg_draft: bool = False) -> dict:
    """The JSON strings stored with the model (ONNX metadata, TorchScript extra files): the class
    names, and `preprocessing` (`Preprocessing.as_dict()` of `src.data.transforms`) with
    `jpeg_draft` (the run read JPEGs in Pillow's draft mode, see `src.data.images`) and the
    steps in words, for users of the file."""
    steps = (
        "RGB image (with jpeg_draft, JPEGs decoded at the smallest 1/2, 1/4 or 1/8 scale whose "
        "sides stay at least resize_size); resize the shorter side to resize_size "
        f"({preprocessing['interpolation']}, antialiased); centre crop image_size x image_size; "
        "scale to [0, 1]; subtract mean and divide by std per channel; layout (N, 3, H, W) "
        "float32"
    )
    preprocessing = {**preprocessing, "jpeg_draft": jpeg_draft, "steps": steps}
    return {
        "class_names": json.dumps(list(class_names)),
        "preprocessing": json.dumps(preprocessing),
    }


def export_model(model, fmt: str, f: IO[bytes], info: dict[str, str], image_size: int) -> None:
    """Write the LightningModule `model` as `fmt` ("onnx" or "torchscript") to the open file
    `f`, in fp32 and eval mode, with `info` (`metadata`) inside."""
    module = Probabilities(model.float().eval()).eval()
    # Batch 2: an example batch of 1 would let the exporters fix the batch size at 1.
    example = torch.randn(2, 3, image_size, image_size)
    write = write_onnx if fmt == "onnx" else write_torchscript
    with torch.no_grad():
        write(module, example, info, f)


def write_torchscript(module: Probabilities, example: torch.Tensor, info: dict, f) -> None:
    """TorchScript traced from the model as it runs, with `info` as extra files `<key>.json`.

    Tracing the eager model keeps sizes computed from the input dynamic (a ViT expands its
    class token to the batch size), which tracing torch.export's graph would freeze. The
    tracer looks at every attribute of every module, and a LightningModule's `trainer`
    property raises outside a Trainer, so the model gets a bare one for the trace.
    """
    from lightning.pytorch import Trainer

    quiet = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level, quiet.level = quiet.level, logging.WARNING  # no "GPU available: ..." lines
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nor hints about SLURM or loggers: it never trains
        module.model.trainer = Trainer(accelerator="cpu", devices=1, barebones=True)
    quiet.setLevel(level)
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but still what C++ and older
        # deployments load. Checks on the (fixed) image size become constants: harmless, and
        # the parity check runs one image alone and in a batch.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        extra_files = {f"{key}.json": value for key, value in info.items()}
        torch.jit.save(torch.jit.trace(module, example), f, _extra_files=extra_files)
    module.model.trainer = None


def write_onnx(module: Probabilities, example: torch.Tensor, info: dict, f) -> None:
    """ONNX (the torch.export-based exporter) with a dynamic batch and `info` as metadata,
    weights inline: one file (ONNX's limit for that is 2 GB)."""
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
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        verbose=False,
    )
    proto = program.model_proto  # a fresh proto at every access
    onnx.helper.set_model_props(proto, info)
    onnx.save_model(proto, f)
