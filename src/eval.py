"""Evaluate a checkpoint: `python -m src.eval run_dir=DIR` or `ckpt_path=PATH [data.data_dir=...]`.

Writes `eval.json` (loss, accuracy, macro F1, balanced accuracy, per-class accuracy,
confusion matrix; with `tta=flip` the same with test-time augmentation) and prints them.
Numbers are computed in full precision on the CPU.
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
            ckpt_path=cfg.ckpt_path, run_dir=cfg.run_dir, split=cfg.split, tta=cfg.tta, **cfg.data
        )
    where = Path(results["run_dir"] or Path(results["ckpt_path"]).parent)
    output = Path(cfg.output or where / "eval.json")
    output.write_text(json.dumps(results, indent=2) + "\n")
    show_results(results)
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
    tta: str | None = None,
) -> dict:
    """Results of the checkpoint (or the run's best one) on one split of the data.

    The split is the run's own (its splits.csv) unless `data_dir` is given: then it is made
    from that folder with the run's split settings (`val/` of a folder with split folders).
    Images are checked and read as training reads them: undecodable ones stop the
    evaluation with their names, unless `skip_bad_images` (then they are counted). With
    `tta="flip"`, the results of test-time augmentation (the mean of each image's and its
    mirror image's probabilities) are added under "tta", beside the plain ones.
    """
    from src.data.splits import build_splits
    from src.inspection.predictions import labelled_images, predict_dataset
    from src.models.checkpoint import load_model
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
    results = {
        "ckpt_path": str(ckpt),
        "run_dir": str(run.path) if run else None,
        "data_dir": str(splits.data_dir),
        "split": split,
        "num_images": len(dataset),
        "skipped_images": skipped,
        "class_names": names,
        **scores(predict_dataset(model, dataset, batch_size), split, model.hparams.metrics),
        "image_size": pre.image_size,
        "resize_size": pre.resize_size,
        "preprocessing": pre.as_dict(),
        "jpeg_draft": draft is not None,
    }
    if tta is not None:
        predictions = predict_dataset(model, dataset, batch_size, tta)
        results["tta"] = {"method": tta, **scores(predictions, split, model.hparams.metrics)}
    return results


def scores(predictions, split: str, extra_metrics: dict | None = None) -> dict:
    """Loss, accuracy, every metric training logs (`src.models.metrics`, the same
    definitions) and the per-class counts of one set of predictions."""
    from src.models.metrics import split_metrics

    names = predictions.class_names
    metrics = split_metrics(split, names, extra_metrics)
    metrics.update(predictions.probs, predictions.labels)
    computed = {key.split("/", 1)[1]: float(value) for key, value in metrics.compute().items()}
    confusion = predictions.confusion_matrix()
    return {
        "loss": predictions.loss,
        **{key: value for key, value in computed.items() if not key.startswith("class_acc/")},
        "per_class_acc": predictions.per_class_accuracy(),
        "per_class_count": dict(zip(names, confusion.sum(dim=1).tolist(), strict=True)),
        "confusion_matrix": confusion.tolist(),
    }


def show_results(results: dict) -> None:
    """Print the results: the totals (and those with test-time augmentation), then per-class
    accuracy and the confusion matrix as tables."""
    from rich.console import Console
    from rich.table import Table

    split, names = results["split"], results["class_names"]
    skipped = len(results["skipped_images"])
    skipped = f", {skipped} unreadable skipped" if skipped else ""
    console = Console(width=120)
    console.print(f"checkpoint {results['ckpt_path']}", soft_wrap=True)
    console.print(f"data       {results['data_dir']}, {split} split "
                  f"({results['num_images']} images{skipped})", soft_wrap=True)  # fmt: skip
    for label, scored in (("", results), ("tta=flip ", results.get("tta"))):
        if scored:
            totals = "   ".join(f"{split}/{key} {scored[key]:.4f}"
                                for key in ("loss", "acc", "f1_macro", "balanced_acc"))  # fmt: skip
            console.print(f"{label}{totals}", soft_wrap=True)
    per_class = Table("class", "images", "accuracy")
    for name in names:
        acc = results["per_class_acc"][name]
        per_class.add_row(
            name, str(results["per_class_count"][name]), "-" if acc is None else f"{acc:.4f}"
        )
    confusion = Table("true \\ predicted", *names, title="confusion matrix")
    for name, row in zip(names, results["confusion_matrix"], strict=True):
        confusion.add_row(name, *map(str, row))
    console.print(per_class, confusion)


if __name__ == "__main__":
    main()
