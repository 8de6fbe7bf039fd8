"""The run figures: written at the end of training and on demand, and drawing what they say."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.transforms import Preprocessing
from src.inspection import figures, run_figures
from src.inspection.predictions import Predictions
from src.inspection.run_figures import FIGURE_NAMES, prediction_figures, write_run_figures
from src.models import checkpoint
from src.models.transfer import TransferLearningModel
from src.runs.run_dir import read_metrics
from src.train import train


def assert_real_picture(path):
    """A PNG of a sensible size with actual content (not one flat colour)."""
    image = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert min(image.shape) >= 200
    assert image.std() > 10, f"{path.name} is (nearly) blank"


def test_on_demand_figures_of_a_run(trained_run, tmp_path):
    paths = write_run_figures(trained_run, out_dir=tmp_path / "figs")
    assert [p.name for p in paths] == [f"{name}.png" for name in FIGURE_NAMES]
    for path in paths:
        assert_real_picture(path)


def test_training_figures_show_the_best_checkpoints_final_validation(fast_config, monkeypatch):
    """The figures reuse that validation's outputs (no second pass: loading the checkpoint
    fails here) and show the validation images exactly as the network saw them."""
    seen, drawn = [], {}
    forward = TransferLearningModel.forward

    def recording_forward(self, inputs):
        if not self.training:
            seen.extend(inputs.detach().clone())
        return forward(self, inputs)

    def recording_figures(predictions, dataset, *args, **kwargs):
        drawn.update(predictions=predictions, dataset=dataset)
        return prediction_figures(predictions, dataset, *args, **kwargs)

    monkeypatch.setattr(TransferLearningModel, "forward", recording_forward)
    monkeypatch.setattr(run_figures, "prediction_figures", recording_figures)
    monkeypatch.setattr(checkpoint, "load_model", None)  # a second pass would call it
    cfg = fast_config("figures.enabled=true", "trainer.max_epochs=2")
    summary = train(cfg)

    figures_dir = Path(cfg.paths.output_dir) / "figures"
    assert sorted(p.stem for p in figures_dir.glob("*.png")) == sorted(FIGURE_NAMES)
    predictions, dataset = drawn["predictions"], drawn["dataset"]
    assert predictions.precision == summary.precision
    assert predictions.accuracy == pytest.approx(summary.best_ckpt_val_acc)
    assert predictions.loss == pytest.approx(summary.best_ckpt_val_loss, rel=1e-4)
    assert predictions.paths == [path for path, _ in dataset.samples]
    final_validation = seen[-len(dataset) :]  # the last images through the network
    for i in range(len(dataset)):
        assert torch.equal(dataset[i][0], final_validation[i])


def test_prediction_grid_marks_wrong_predictions_in_red():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    predictions = Predictions(
        paths=["a", "b", "c"],
        labels=torch.tensor([0, 1, 1]),  # the third one is wrong
        probs=probs,
        losses=-probs[torch.arange(3), torch.tensor([0, 1, 1])].log(),
        class_names=["ants", "bees"],
    )
    half = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    fig = figures.prediction_grid([torch.zeros(3, 8, 8)] * 3, predictions, [0, 1, 2], half)
    # A zero input is the weights' mean: mid-grey on screen for mean 0.5 (not ImageNet's).
    canvas = fig.axes[0].images[0].get_array()
    assert (canvas == 128).all(axis=2).sum() == 3 * 8 * 8
    titles = [(text.get_text(), text.get_color()) for text in fig.axes[0].texts]
    assert titles[0] == ("pred ants 0.90\ntrue ants", figures.RIGHT)
    assert titles[2] == ("pred ants 0.70\ntrue bees", figures.WRONG)
    assert "1 wrong" in fig.get_suptitle()
    assert predictions.confusion_matrix().tolist() == [[1, 0], [1, 1]]
    assert predictions.per_class_accuracy() == {"ants": 1.0, "bees": 0.5}


def test_learning_rate_rows_join_the_epoch_they_start(tmp_path):
    # CSVLogger leaves `epoch` empty on LearningRateMonitor's rows, logged as an epoch starts.
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,lr-SGD,step,train/loss,val/acc\n"
        ",0.1,0,,\n0,,2,,0.5\n0,,2,0.7,\n"
        ",0.05,3,,\n1,,5,,0.75\n1,,5,0.4,\n"
    )
    metrics = read_metrics(path)
    assert metrics["lr-SGD"] == {0: 0.1, 1: 0.05}
    assert metrics["val/acc"] == {0: 0.5, 1: 0.75}
    assert metrics["train/loss"] == pytest.approx({0: 0.7, 1: 0.4})


def thirty_class_predictions() -> Predictions:
    """5 images of each of 30 classes, mostly right; long names that differ only at the end."""
    names = [f"{kind}_{i:02d}" for i, kind in enumerate(
        ["cicada_killer_wasp_female", "ladybird_beetle", "ant"] * 10)]  # fmt: skip
    labels = torch.arange(30).repeat_interleave(5)
    logits = torch.randn(150, 30, generator=torch.Generator().manual_seed(0))
    probs = (logits + 3 * torch.nn.functional.one_hot(labels, 30)).softmax(dim=1)
    losses = -probs[torch.arange(150), labels].log()
    return Predictions([f"{i}.jpg" for i in range(150)], labels, probs, losses, names)


def text_boxes(fig, texts):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts if t.get_text()]


def overlapping(boxes) -> list[tuple[int, int]]:
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes[i + 1 :], i + 1)
            if a.overlaps(b)]  # fmt: skip


def test_figures_of_thirty_classes_stay_readable(tmp_path):
    predictions = thirty_class_predictions()
    names = predictions.class_names
    fig = figures.confusion_matrix(predictions.confusion_matrix(), names)
    assert max(fig.get_size_inches()) <= 16  # not a 40-inch poster
    ax = fig.axes[0]
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        labels = [t.get_text() for t in ticks]
        assert len(set(labels)) == 30  # shortened, yet still telling the classes apart
        assert all(len(label) <= figures.NAME_CHARS for label in labels)
        assert overlapping(text_boxes(fig, ticks)) == []
    # Every number sits inside its own cell, in a font that is still legible.
    cell = ax.transData.transform((1, 0))[0] - ax.transData.transform((0, 0))[0]
    cells = [t for t in ax.texts if t.get_text()]
    assert {int(t.get_text()) for t in cells} >= {3, 4, 5}
    assert all(t.get_fontsize() >= 6 for t in cells)
    assert all(box.width < cell and box.height < cell for box in text_boxes(fig, cells))
    fig.savefig(tmp_path / "confusion_matrix.png", dpi=100)
    assert_real_picture(tmp_path / "confusion_matrix.png")

    images = [torch.zeros(3, 8, 8)] * 16
    pre = Preprocessing()
    for grid in (figures.prediction_grid(images, predictions, [*range(0, 150, 10), 149], pre),
                 figures.top_losses(images[:8], predictions, list(range(8)), pre)):  # fmt: skip
        titles = [ax.title for ax in grid.axes if ax.get_title()]
        assert overlapping(text_boxes(grid, titles)) == []
        grid.savefig(tmp_path / "grid.png", dpi=100)
        assert_real_picture(tmp_path / "grid.png")
