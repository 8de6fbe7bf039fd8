"""Export a checkpoint: `python -m src.export ckpt_path=PATH format=onnx|torchscript [output=...]`.

Writes a model file (`src.models.export`) and keeps it only when the parity check passes: on
real images read as every command reads them, its probabilities agree with the checkpoint's
(fp32, CPU) to `tolerance` and its most probable class exactly.
"""

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from src.errors import UserError, exit_on_user_error
from src.models.export import Probabilities

log = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


class ParityError(Exception):
    """The exported model does not answer as the checkpoint does (nothing was written)."""


class Parity:
    """How far the `exported` model's probabilities on `images` (from `source`) are from those
    of the checkpoint's `model` (fp32, eval mode)."""

    def __init__(self, model, exported, images: torch.Tensor, source: str, tolerance: float):
        with torch.inference_mode():
            expected = Probabilities(model.float().eval())(images)
        got, alone = exported(images), exported(images[:1])
        self.source, self.images, self.tolerance = source, len(images), tolerance
        self.max_diff = (got - expected).abs().max().item()  # over images and classes
        self.top1_agree = int((got.argmax(dim=1) == expected.argmax(dim=1)).sum())
        self.batch_diff = (alone - got[:1]).abs().max().item()  # one image alone vs in a batch

    @property
    def ok(self) -> bool:
        agree = self.top1_agree == self.images
        return agree and self.max_diff <= self.tolerance and self.batch_diff <= self.tolerance

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
    from src.models.export import export_model, metadata
    from src.models.exported import ExportedModel
    from src.predict import expand_inputs, read_inputs
    from src.runs.run_dir import checkpoint_preprocessing, draft_size, run_for_checkpoint

    model = load_model(ckpt)  # a foreign or damaged file stops here, with its reason
    run = run_for_checkpoint(ckpt)
    if run is not None and not allow_unfinished:
        refuse_unfinished(run, ckpt)
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
        source = f"images={images}"
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


def refuse_unfinished(run, ckpt: Path) -> None:
    """Stop when the checkpoint's run did not finish: it holds a model training left midway."""
    summary = run.summary
    if summary is None:
        why = "has not finished (still running, or killed): it has no summary.json"
    elif summary.interrupted:
        why = f"was interrupted ({summary.interrupted_by}) after {summary.epochs_trained} epoch(s)"
    else:
        return
    raise UserError(
        f"Checkpoint {ckpt} is from run {run.path}, which {why}. Finish it first "
        f"(python -m src.train resume={run.path}), or export it as it is with "
        "allow_unfinished=true."
    )


if __name__ == "__main__":
    main()
