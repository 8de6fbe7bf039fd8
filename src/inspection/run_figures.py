"""The five figures of a training run, from its directory: what `src.train` saves at the end
of a run (`figures.enabled=true`) and what `notebooks/inspect_run.ipynb` shows.

Prediction figures come from the run's best checkpoint on the validation split of the run's
`splits.csv`. At the end of training, `src.train` hands over the outputs of that
checkpoint's final validation and its datasets (the images exactly as the network saw
them), so nothing is decoded or predicted twice. On demand, the checkpoint is loaded and
run over the validation images (in fp32) with the image sizes of the run's config;
`data_dir` replaces the run's data
folder if it moved.
"""

import logging
from pathlib import Path

import torch

from src.data.transforms import build_transform
from src.inspection import figures
from src.inspection.predictions import Predictions, labelled_images, predict_dataset, val_images
from src.runs.run_dir import Run, checkpoint_preprocessing, draft_size

log = logging.getLogger(__name__)

FIGURE_NAMES = (
    "augmented_batch",
    "val_predictions",
    "confusion_matrix",
    "learning_curves",
    "top_losses",
)


def val_predictions(run: Run, data_dir=None, ckpt_path=None) -> tuple[Predictions, object]:
    """The best checkpoint's predictions over the validation images, and those images."""
    from src.models.checkpoint import load_model

    model = load_model(ckpt_path or run.best_ckpt)
    splits = run.splits(data_dir, wanted=("val",))
    pre = checkpoint_preprocessing(model.hparams, run)
    dataset = val_images(splits, model.hparams.class_names, pre, True, draft_size(run, pre))
    return predict_dataset(model, dataset), dataset


def sample(count: int, n: int, seed: int = 0) -> list[int]:
    """`n` indices out of `count`, fixed by `seed`, in order (both classes, not the first n)."""
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(count, generator=generator)[:n].tolist())


def augmented_batch(run: Run, data_dir=None, n: int = 16, seed: int = 0, dataset=None):
    """`n` training images through the training augmentation, with their labels.

    `dataset`: the training set a run used (decoded-image cache and all); default: the
    training split of the run's `splits.csv`, with the training augmentation.
    """
    pre = run.preprocessing
    if dataset is None:
        splits = run.splits(data_dir, wanted=("train",))
        transform, draft = build_transform(pre, run.augment), draft_size(run, pre)
        dataset = labelled_images(splits, "train", run.class_names or [], transform, True, draft)[0]
    with torch.random.fork_rng():  # the random crops and flips, without touching global state
        torch.manual_seed(seed)
        items = [dataset[i] for i in sample(len(dataset), n, seed)]
    images = torch.stack([image for image, _ in items])
    labels = torch.tensor([label for _, label in items])
    return figures.augmented_batch(images, labels, dataset.classes, pre)


def prediction_figures(predictions: Predictions, dataset, pre, n: int = 16, seed: int = 0) -> dict:
    """Prediction grid, confusion matrix and top losses of one set of predictions; `pre`: the
    preprocessing the images went through (`Preprocessing`), undone for display."""
    shown = sample(len(dataset), n, seed)
    worst = predictions.losses.argsort(descending=True)[: min(8, len(dataset))].tolist()
    title = (
        f"Confusion matrix, val ({len(dataset)} images)\n"
        f"accuracy {predictions.accuracy:.3f}, computed in {predictions.precision}"
    )
    return {
        "val_predictions": figures.prediction_grid(
            [dataset[i][0] for i in shown], predictions, shown, pre
        ),
        "confusion_matrix": figures.confusion_matrix(
            predictions.confusion_matrix(), predictions.class_names, title
        ),
        "top_losses": figures.top_losses([dataset[i][0] for i in worst], predictions, worst, pre),
    }


def run_figures(
    run_dir: str | Path, data_dir=None, validation=None, train_set=None, cam: bool = False
) -> dict:
    """All five figures of a run that its files allow: without metrics.csv there are no
    curves, without a best checkpoint no prediction figures (a log line says so). `cam`: a
    sixth, the class activation maps of the best checkpoint (`src.inspection.cam`).

    `validation`: (Predictions, dataset) of the best checkpoint, as
    `KeepValidationOutputs.predictions` returns them; `train_set`: the run's training set.
    Without them the figures are made from the files (see the module docstring).
    """
    run = Run(run_dir)
    made = {}
    if (run.path / "csv" / "metrics.csv").is_file():
        best_epoch = run.summary.best_epoch if run.summary else None
        made["learning_curves"] = figures.learning_curves(run.metrics(), best_epoch)
    else:
        log.info("No csv/metrics.csv in %s: no learning curves.", run.path)
    made["augmented_batch"] = augmented_batch(run, data_dir, dataset=train_set)
    best_ckpt = run.summary.best_ckpt_path(run.path) if run.summary else None
    if validation is None and best_ckpt is not None and best_ckpt.is_file():
        validation = val_predictions(run, data_dir, best_ckpt)
    if validation is not None:
        made.update(prediction_figures(*validation, run.preprocessing))
    else:
        log.info("No best checkpoint in %s: no prediction figures.", run.path)
    if cam and validation is not None and best_ckpt is not None and best_ckpt.is_file():
        from src.inspection.cam import cam_figure
        from src.models.checkpoint import load_model

        predictions, dataset = validation
        # The 8 highest losses, then 4 right answers.
        order = predictions.losses.argsort(descending=True).tolist()
        right = [i for i in order[8:] if predictions.preds[i] == predictions.labels[i]]
        shown = order[:8] + right[-4:]
        try:
            model = load_model(best_ckpt)
            made["cam"] = cam_figure(model, predictions, dataset, run.preprocessing, shown)
        except ValueError as err:
            log.warning("No class activation maps: %s", err)
    return {name: made[name] for name in (*FIGURE_NAMES, "cam") if name in made}


def write_run_figures(
    run_dir, data_dir=None, out_dir=None, dpi=100, validation=None, train_set=None, cam=False
) -> list[Path]:
    """Save the run's figures as `<out_dir>/<name>.png` (default `<run_dir>/figures/`)."""
    out = Path(out_dir or Path(run_dir) / "figures")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in run_figures(run_dir, data_dir, validation, train_set, cam).items():
        paths.append(out / f"{name}.png")
        # zlib's fastest level: a third faster to write, files about 15% larger.
        fig.savefig(paths[-1], dpi=dpi, pil_kwargs={"compress_level": 1})
    return paths
