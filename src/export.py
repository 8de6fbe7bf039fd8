"""Export a checkpoint: `python -m src.export ckpt_path=PATH format=onnx|torchscript [output=...]`
writes the classifier as a file that runs without this template, with the class names and the
preprocessing inside (`src.models.exported` reads them back), kept only when it passes the
parity check (`Parity`)."""

import json
import logging
import warnings
from pathlib import Path
from typing import IO

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from src.errors import UserError, exit_on_user_error
from src.models.exported import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


class ParityError(Exception):
    """The exported model does not answer as the checkpoint does (nothing was written)."""


class Parity:
    """How far the `exported` model's probabilities on `images` (from `source`: real images, read
    as every command reads them) are from those of the checkpoint's `model` (fp32, eval mode).
    `ok`: they agree to `tolerance`, and on the most probable class exactly."""

    def __init__(self, model, exported, images: torch.Tensor, source: str, tolerance: float):
        with torch.inference_mode():
            expected = Probabilities(model.float().eval())(images)
        got, alone = exported(images), exported(images[:1])
        self.source, self.images, self.tolerance = source, len(images), tolerance
        self.max_diff = (got - expected).abs().max().item()  # over images and classes
        self.top1_agree = int((got.argmax(dim=1) == expected.argmax(dim=1)).sum())
        self.batch_diff = (alone - got[:1]).abs().max().item()  # one image alone vs in a batch
        worst = max(self.max_diff, self.batch_diff)
        self.ok = self.top1_agree == len(images) and worst <= tolerance

    def __str__(self) -> str:
        return (
            f"Parity on {self.images} image(s) from {self.source}: largest probability "
            f"difference {self.max_diff:.2e} (limit {self.tolerance:g}), top-1 the same for "
            f"{self.top1_agree}/{self.images}, one image alone vs in the batch "
            f"{self.batch_diff:.2e}."
        )


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        with exit_on_user_error(log):
            output, parity = export(**cfg)
    except ParityError as err:
        log.error("%s", err)
        raise SystemExit(1) from None
    print(parity)
    print(f"Wrote {output} ({output.stat().st_size / 1e6:.1f} MB)")


def export(
    ckpt_path: str,
    format: str = "onnx",
    output: str | None = None,
    images: str | list[str] | None = None,
    parity_images: int = 8,
    tolerance: float = 1e-4,
    image_size: int | None = None,
    resize_size: int | None = None,
    allow_unfinished: bool = False,
):
    """Write the checkpoint as `format` and check it on `images` (a file, folder or glob, or a
    list of them; none: the run's validation split); returns the file and the `Parity` found."""
    if not ckpt_path:
        raise UserError("Pass ckpt_path=PATH/TO/x.ckpt (a checkpoint of src.train).")
    if format not in SUFFIXES:
        raise UserError(f"format={format} is not an export format; choose one of {list(SUFFIXES)}.")
    ckpt = Path(ckpt_path).expanduser()
    output = Path(output).expanduser() if output else ckpt.with_suffix(SUFFIXES[format])
    if not output.parent.is_dir():
        raise UserError(f"output={output}: the folder {output.parent} does not exist.")
    if output.resolve() == ckpt.resolve():
        raise UserError(f"output={output} would overwrite the checkpoint; choose another name.")

    from src.files import atomic_write
    from src.inspection.predictions import val_images
    from src.inspection.run_figures import sample
    from src.models.checkpoint import load_model
    from src.models.exported import ExportedModel
    from src.predict import expand_inputs, read_inputs
    from src.runs.run_dir import checkpoint_preprocessing, draft_size, run_for_checkpoint

    model = load_model(ckpt)  # a foreign or damaged file stops here, with its reason
    run = run_for_checkpoint(ckpt)
    summary = run.summary if run is not None else None
    # A run that did not finish holds a model that training left midway.
    if run is not None and not allow_unfinished and (summary is None or summary.interrupted):
        why = "has not finished (still running, or killed): it has no summary.json"
        if summary is not None:
            by, epochs = summary.interrupted_by, summary.epochs_trained
            why = f"was interrupted ({by}) after {epochs} epoch(s)"
        raise UserError(
            f"Checkpoint {ckpt} is from run {run.path}, which {why}. Finish it first "
            f"(python -m src.train resume={run.path}), or export it as it is with "
            "allow_unfinished=true."
        )
    # Images are prepared and read as the run did (its preprocessing and data.jpeg_draft).
    pre = checkpoint_preprocessing(model.hparams, run, image_size, resize_size)
    draft = draft_size(run, pre)
    class_names = list(model.hparams.class_names)
    if images:
        read = list(read_inputs(expand_inputs(images), pre.eval_transform(), draft))
        unreadable = [str(path) for path, image, _ in read if image is None]
        if unreadable:
            log.warning("Not readable, left out of the parity check: %s", ", ".join(unreadable))
        if len(unreadable) == len(read):
            raise UserError(f"No readable image among images={[str(p) for p, *_ in read][:5]}.")
        tensors = torch.stack([image for _, image, _ in read if image is not None])
        source = "images=" + ",".join([images] if isinstance(images, str) else images)
    elif run is not None:  # a fixed sample of the validation split, over every class
        dataset = val_images(run.splits(wanted=("val",)), class_names, pre, draft_size=draft)
        tensors = torch.stack([dataset[i][0] for i in sample(len(dataset), parity_images)])
        source = f"the validation split of run {run.path}"
    else:
        raise UserError(
            f"{ckpt} is not inside its run directory, so its validation images are unknown: "
            "pass images=FILE_OR_DIR_OR_GLOB (a few real images) for the parity check."
        )

    with atomic_write(output, "wb") as f:
        info = metadata(class_names, pre.as_dict(), draft is not None)
        export_model(model, format, f, info, pre.image_size)
        f.flush()
        parity = Parity(model, ExportedModel(f.name, format), tensors, source, tolerance)
        if not parity.ok:  # leaving the block by an exception discards the file
            raise ParityError(f"{parity} The exported model disagrees; {output} not written.")
    return output, parity


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
    described = {**preprocessing, "jpeg_draft": jpeg_draft, "steps": steps}
    return {"class_names": json.dumps(list(class_names)), "preprocessing": json.dumps(described)}


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
    property raises outside a Trainer: the trace runs under `_jit_is_scripting`, which makes
    it return None, as in Lightning's own `to_torchscript`.
    """
    from lightning.pytorch.core.module import _jit_is_scripting

    with warnings.catch_warnings(), _jit_is_scripting():
        # TorchScript is deprecated in favour of torch.export, but still what C++ and older
        # deployments load. Checks on the (fixed) image size become constants: harmless, and
        # the parity check runs one image alone and in a batch.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        extra_files = {f"{key}.json": value for key, value in info.items()}
        torch.jit.save(torch.jit.trace(module, example), f, _extra_files=extra_files)


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


if __name__ == "__main__":
    main()
