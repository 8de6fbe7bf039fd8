"""Evaluate a checkpoint: `python -m src.eval run_dir=DIR` or `ckpt_path=PATH [data.data_dir=...]`.

Writes `eval.json` (loss, accuracy, macro F1, balanced accuracy, per-class accuracy,
confusion matrix) and prints the same as a small table. Numbers are computed in full
precision on the CPU.
"""

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.errors import UserError, exit_on_user_error

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error(log):
        results = evaluate(
            ckpt_path=cfg.ckpt_path,
            run_dir=cfg.run_dir,
            split=cfg.split,
            **cfg.data,
        )
    where = Path(results["run_dir"] or Path(results["ckpt_path"]).parent)
    output = Path(cfg.output or where / "eval.json")
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(format_results(results))
    print(f"Wrote {output}")


def evaluate(
    ckpt_path: str | None = None,
    run_dir: str | None = None,
    data_dir: str | None = None,
    image_size: int | None = None,
    resize_size: int | None = None,
    batch_size: int = 32,
    split: str = "val",
    skip_bad_images: bool = False,
    jpeg_draft: bool | None = None,
) -> dict:
    """Results of the checkpoint (or the run's best one) on one split of the data.

    The split is the run's own (its splits.csv) unless `data_dir` is given: then it is made
    from that folder with the run's split settings (`val/` of a folder with split folders).
    Images are checked and read as training reads them: undecodable ones stop the
    evaluation with their names, unless `skip_bad_images` (then they are counted).
    """
    from src.data.splits import build_splits
    from src.inspection.predictions import labelled_images, predict_dataset
    from src.models.checkpoint import load_model
    from src.models.metrics import split_metrics
    from src.runs.run_dir import Run, checkpoint_preprocessing, draft_size, run_for_checkpoint

    if not ckpt_path and not run_dir:
        raise UserError("Nothing to evaluate: pass ckpt_path=PATH/TO/x.ckpt or run_dir=DIR.")
    run = Run(run_dir) if run_dir else run_for_checkpoint(ckpt_path)
    ckpt = Path(ckpt_path) if ckpt_path else run.best_ckpt
    if run:
        splits = run.splits(data_dir, wanted=(split,))
    elif data_dir:
        splits = build_splits(data_dir, wanted=(split,))
    else:
        raise UserError(
            f"No training run found beside {ckpt} to take the data folder from; "
            "pass data.data_dir=/path/to/data (holding val/<class>/ images)."
        )
    model = load_model(ckpt)
    names = list(model.hparams.class_names)
    # Images read and prepared as the run did: its preprocessing and data.jpeg_draft.
    pre = checkpoint_preprocessing(model.hparams, run, image_size, resize_size)
    draft = draft_size(run, pre, jpeg_draft)
    transform = pre.eval_transform()
    dataset, skipped = labelled_images(splits, split, names, transform, skip_bad_images, draft)
    predictions = predict_dataset(model, dataset, batch_size)
    confusion = predictions.confusion_matrix()
    counts = confusion.sum(dim=1).tolist()
    # The definitions training logs (src.models.metrics), on these predictions.
    metrics = split_metrics(split, names)
    metrics.update(predictions.probs, predictions.labels)
    computed = {key.split("/", 1)[1]: float(value) for key, value in metrics.compute().items()}
    return {
        "ckpt_path": str(ckpt),
        "run_dir": str(run.path) if run else None,
        "data_dir": str(splits.data_dir),
        "split": split,
        "num_images": len(dataset),
        "skipped_images": skipped,
        "class_names": names,
        "loss": predictions.loss,
        "acc": predictions.accuracy,
        "f1_macro": computed["f1_macro"],
        "balanced_acc": computed["balanced_acc"],
        "per_class_acc": predictions.per_class_accuracy(),
        "per_class_count": dict(zip(names, counts, strict=True)),
        "confusion_matrix": confusion.tolist(),
        "image_size": pre.image_size,
        "resize_size": pre.resize_size,
        "preprocessing": pre.as_dict(),
        "jpeg_draft": draft is not None,
    }


def format_results(results: dict) -> str:
    """The results as a few lines of text: totals, per-class accuracy, confusion matrix."""
    names = results["class_names"]
    width = max(len(n) for n in [*names, "class"])
    split = results["split"]
    skipped = len(results["skipped_images"])
    skipped = f", {skipped} unreadable skipped" if skipped else ""
    lines = [
        f"checkpoint {results['ckpt_path']}",
        f"data       {results['data_dir']}, {split} split "
        f"({results['num_images']} images{skipped})",
        f"{split}/loss {results['loss']:.4f}   {split}/acc {results['acc']:.4f}   "
        f"{split}/f1_macro {results['f1_macro']:.4f}   "
        f"{split}/balanced_acc {results['balanced_acc']:.4f}",
        "",
        f"{'class':<{width}}  images  accuracy",
    ]
    for name in names:
        acc = results["per_class_acc"][name]
        acc_text = "-" if acc is None else f"{acc:.4f}"
        lines.append(f"{name:<{width}}  {results['per_class_count'][name]:>6}  {acc_text:>8}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    cell = max(6, *(len(n) for n in names))
    lines.append(" " * width + "".join(f"{n:>{cell + 2}}" for n in names))
    for name, row in zip(names, results["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell + 2}}" for v in row))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
