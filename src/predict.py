"""Label new images: `python -m src.predict ckpt_path=PATH inputs=FILE_OR_DIR_OR_GLOB [top_k=2]`
writes and prints one CSV row per input file: its top-k labels and probabilities, or why it
could not be read. No data folder is needed (see `load_classifier`)."""

import csv
import glob
import itertools
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from src.data.images import is_hidden, load_rgb
from src.data.transforms import Preprocessing, with_tta
from src.errors import UserError, exit_on_user_error
from src.models.exported import ExportedModel, exported_format

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error(log):
        rows = predict(**{key: value for key, value in cfg.items() if key != "output"})
    write_csv(rows, Path(cfg.output))
    for row in rows:
        top = ", ".join(f"{n} {p:.3f}" for n, p in zip(row["labels"], row["probs"], strict=True))
        print(f"{row['path']}: {row['error'] or top}")
    failed = sum(1 for row in rows if row["error"])
    print(f"Wrote {cfg.output}: {len(rows) - failed} images labelled, {failed} not readable.")


def expand_inputs(inputs: str | list[str]) -> list[Path]:
    """Files named by each input: a file, every non-hidden file under a folder, or a glob."""
    files = []
    for item in [inputs] if isinstance(inputs, str) else inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not is_hidden(p))
        elif path.is_file():
            files.append(path)
        elif matches := sorted(map(Path, glob.glob(str(path), recursive=True))):
            files += [match for match in matches if match.is_file()]
        else:
            raise UserError(
                f"inputs={item} is not a file or folder and matches no files. Pass an "
                "image, a folder of images or a glob such as 'photos/**/*.jpg' (quoted)."
            )
    return files


def predict(
    ckpt_path: str,
    inputs: str | list[str],
    top_k: int = 5,
    image_size: int | None = None,
    resize_size: int | None = None,
    batch_size: int = 32,
    jpeg_draft: bool | None = None,
    tta: str | None = None,
) -> list[dict]:
    """One dict per input file: path, `labels` and `probs` (top-k, most probable first) and
    `error` (None, or why the file could not be read as an image). `tta="flip"`: the
    probabilities are the mean of the image's and its mirror image's."""
    if not ckpt_path or not inputs:
        raise UserError(
            "Pass ckpt_path=PATH/TO/x.ckpt (a checkpoint of src.train, or a model file of "
            "src.export) and inputs=FILE_OR_DIR_OR_GLOB (the images to label)."
        )
    if top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}.")
    files = expand_inputs(inputs)
    model, names, transform, draft = load_classifier(ckpt_path, image_size, resize_size, jpeg_draft)
    classify, top_k = with_tta(model, tta), min(top_k, len(names))

    rows, read = [], read_inputs(files, transform, draft)
    while chunk := list(itertools.islice(read, batch_size)):  # batch_size files at a time
        new = [{"path": str(p), "labels": [], "probs": [], "error": why} for p, _, why in chunk]
        batch = [(row, x) for row, (_, x, _) in zip(new, chunk, strict=True) if x is not None]
        rows += new
        if not batch:
            continue
        with torch.inference_mode():
            values, indices = classify(torch.stack([x for _, x in batch])).topk(top_k, dim=1)
        for (row, _), top_probs, top_indices in zip(batch, values, indices, strict=True):
            row["labels"] = [names[i] for i in top_indices.tolist()]
            row["probs"] = top_probs.tolist()
    return rows


def read_inputs(files: list[Path], transform, draft_size=None):
    """Each file as (path, network input, None), or (path, None, why) when it is not a
    readable image; read by `load_rgb` as training reads (16-bit, palette, CMYK alike)."""
    for path in files:
        try:
            yield path, transform(load_rgb(path, draft_size)), None
        except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError too
            yield path, None, f"not a readable image ({type(err).__name__}: {err})"


def load_classifier(ckpt_path: str, image_size=None, resize_size=None, jpeg_draft=None):
    """(the model as images -> class probabilities, class names, validation transform,
    `draft_size` for `load_rgb`) of a checkpoint or an exported model. An exported model (.onnx,
    TorchScript) carries its class names and preprocessing: it needs neither Lightning nor its
    run directory. A checkpoint carries its preprocessing, and gets `data.jpeg_draft` from its
    run's config.yaml when that is beside the checkpoints folder."""
    if exported_format(ckpt_path):
        model = ExportedModel(ckpt_path)
        saved = model.preprocessing
        if image_size and image_size != saved["image_size"]:
            raise UserError(
                f"image_size={image_size}: {ckpt_path} takes {saved['image_size']}-pixel "
                "images; leave image_size unset."
            )
        pre = Preprocessing.resolve(Preprocessing.fields_of(saved), resize_size=resize_size)
        draft = saved.get("jpeg_draft", False) if jpeg_draft is None else jpeg_draft
        return model, model.class_names, pre.eval_transform(), pre.resize_size if draft else None

    from src.export import Probabilities
    from src.models.checkpoint import load_model
    from src.runs.run_dir import checkpoint_preprocessing, draft_size, run_for_checkpoint

    model = load_model(ckpt_path)
    run = run_for_checkpoint(ckpt_path)
    pre = checkpoint_preprocessing(model.hparams, run, image_size, resize_size)
    draft = draft_size(run, pre, jpeg_draft)
    return Probabilities(model), list(model.hparams.class_names), pre.eval_transform(), draft


def write_csv(rows: list[dict], output: Path) -> None:
    """Columns path, label_1, prob_1, ..., label_k, prob_k, error; unreadable files have
    empty labels and say why in `error`."""
    k = max((len(row["labels"]) for row in rows), default=0)
    top = [f"{kind}_{i}" for i in range(1, k + 1) for kind in ("label", "prob")]
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", *top, "error"], restval="")
        writer.writeheader()
        for row in rows:
            cells = {f"label_{i}": label for i, label in enumerate(row["labels"], 1)}
            cells.update({f"prob_{i}": f"{prob:.6f}" for i, prob in enumerate(row["probs"], 1)})
            writer.writerow({"path": row["path"], **cells, "error": row["error"] or ""})


if __name__ == "__main__":
    main()
