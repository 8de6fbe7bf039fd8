"""Class imbalance on a generated 9:1 dataset: the balanced sampler and class weights do what
they promise, the metrics that expose a minority class are logged, and any of them can pick
the best checkpoint."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from torch.nn import functional as F

from src.data.image_folder import loss_weights
from src.errors import UserError, find_cause
from src.models.metrics import higher_is_better
from src.models.transfer import TransferLearningModel
from src.runs.run_dir import read_metrics
from src.train import train
from tests.helpers.config import FAST, compose_train_config
from tests.helpers.data import datamodule
from tests.helpers.images import make_image_folder

SIZES = {"image_size": 32, "resize_size": 36}


@pytest.fixture
def nine_to_one(tmp_path) -> Path:
    """18 ants and 2 bees to train on; 6 and 2 to validate on."""
    return make_image_folder(tmp_path / "data", train_per_class=[18, 2], val_per_class=[6, 2])


def labels_drawn(dm, seed: int) -> list[int]:
    """The training labels of one epoch, seeded as `SeedEachEpoch` seeds an epoch."""
    seed_everything(seed, verbose=False)
    return [label for _, labels in dm.train_dataloader() for label in labels.tolist()]


def test_balanced_sampler_draws_the_minority_class_as_often_as_the_majority(nine_to_one):
    shuffled = datamodule(nine_to_one, **SIZES)
    balanced = datamodule(nine_to_one, sampler="balanced", **SIZES)
    epochs = [labels_drawn(balanced, seed) for seed in range(10)]
    assert all(len(epoch) == 20 for epoch in epochs)  # an epoch keeps its length
    bees = sum(epoch.count(1) for epoch in epochs) / 200
    assert 0.4 <= bees <= 0.6  # 2 bees of 20 images, drawn half of the time
    assert all(labels_drawn(shuffled, seed).count(1) == 2 for seed in range(3))
    # The draws follow the seed of the epoch: a resumed epoch repeats them.
    assert labels_drawn(balanced, 7) == labels_drawn(balanced, 7) != labels_drawn(balanced, 8)


def test_balanced_sampler_resumes_to_the_same_epochs(nine_to_one, tmp_path):
    # Frozen: only the head trains, the quickest run whose batches change its numbers.
    recipe = [*FAST, f"data.data_dir={nine_to_one}", "data.sampler=balanced", "strategy=frozen",
              "trainer.deterministic=true", "optimizer.lr=0.05"]  # fmt: skip

    def run(name: str, *overrides: str) -> Path:
        out = tmp_path / name
        out.mkdir(exist_ok=True)
        train(compose_train_config([*recipe, f"paths.output_dir={out}", *overrides]))
        return out

    straight = run("straight", "trainer.max_epochs=2")
    run("resumed", "trainer.max_epochs=1")
    resumed = run("resumed", "trainer.max_epochs=2", "ckpt_path=last")
    metrics = (straight / "csv" / "metrics.csv").read_text()
    assert metrics == (resumed / "csv" / "metrics.csv").read_text()


def test_balanced_class_weights_use_scikit_learns_formula():
    targets = [0] * 18 + [1] * 2
    # n_images / (n_classes * images of the class): 20 / 36 and 20 / 4.
    assert loss_weights("balanced", targets, ["ants", "bees"]) == pytest.approx([20 / 36, 5.0])
    assert loss_weights([1, 3], targets, ["ants", "bees"]) == [1.0, 3.0]
    assert loss_weights(None, targets, ["ants", "bees"]) is None
    with pytest.raises(UserError, match="one weight per class"):
        loss_weights([1, 2, 3], targets, ["ants", "bees"])
    with pytest.raises(UserError, match=r"none of \['wasps'\]"):
        loss_weights("balanced", targets, ["ants", "bees", "wasps"])


def test_class_weights_weigh_the_training_loss_only():
    def model(class_weights=None):
        return TransferLearningModel(2, ["ants", "bees"], weights=None, class_weights=class_weights)

    weighted, plain = model([20 / 36, 5.0]), model()
    # Backbone features (N, 512) go straight to the head.
    features, labels = torch.randn(6, 512), torch.tensor([0, 0, 0, 0, 0, 1])
    logits = weighted.head(features)
    expected = F.cross_entropy(logits, labels, weight=torch.tensor([20 / 36, 5.0]))
    assert weighted.training_step((features, labels), 0).item() == pytest.approx(expected.item())
    plain.head.load_state_dict(weighted.head.state_dict())
    unweighted = F.cross_entropy(logits, labels).item()
    assert plain.training_step((features, labels), 0).item() == pytest.approx(unweighted)
    # Validation reports the plain cross-entropy either way, comparable between runs.
    weighted.update_metrics((features, labels), weighted.val_loss, weighted.val_metrics)
    assert weighted.val_loss.compute().item() == pytest.approx(unweighted)
    # The weights travel in the hyper-parameters, not the weights: checkpoints interchange.
    assert weighted.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(weighted.state_dict())


def test_monitored_f1_picks_names_and_reports_the_best_checkpoint(nine_to_one, tmp_path):
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from src.data.splits import build_splits
    from src.data.transforms import Preprocessing
    from src.inspection.predictions import predict_dataset, val_images
    from src.models.checkpoint import load_model

    out = tmp_path / "run"
    out.mkdir()
    cfg = compose_train_config(
        [*FAST, f"data.data_dir={nine_to_one}", f"paths.output_dir={out}",
         "trainer.max_epochs=3", "trainer.precision=32-true", "optimizer.lr=0.05",
         "strategy=frozen",
         "monitor=val/f1_macro", "data.sampler=balanced", "model.class_weights=balanced"]
    )  # fmt: skip
    summary = train(cfg)
    logged = read_metrics(out / "csv" / "metrics.csv")
    model = load_model(summary.best_ckpt)
    assert set(higher_is_better(model.val_metrics, ["ants", "bees"])) <= set(logged)
    f1 = logged["val/f1_macro"]
    best_epoch = max(f1, key=lambda e: (f1[e], -e))  # the first epoch reaching the best
    assert (summary.monitor, summary.best_epoch) == ("val/f1_macro", best_epoch)
    assert summary.monitor_best == pytest.approx(f1[best_epoch])
    assert logged["val/f1_macro_best"][2] == pytest.approx(max(f1.values()))
    name = f"best-epoch{best_epoch:03d}-f1_macro{f1[best_epoch]:.4f}.ckpt"
    assert Path(summary.best_ckpt).name == name
    assert summary.optimized_metric == "val/f1_macro_best"
    assert summary.optimized_value == pytest.approx(max(f1.values()))
    assert summary.best_val_acc == pytest.approx(max(logged["val/acc"].values()))
    assert "best val/f1_macro" in summary.result_line(out)

    # The best checkpoint's metrics, against scikit-learn on its predictions.
    assert model.hparams.class_weights == pytest.approx([20 / 36, 5.0])
    val = val_images(build_splits(nine_to_one), ["ants", "bees"], Preprocessing(32, 36))
    predictions = predict_dataset(model, val)
    labels, preds = predictions.labels.numpy(), predictions.preds.numpy()
    metrics = summary.best_ckpt_val_metrics
    assert metrics["val/f1_macro"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert metrics["val/balanced_acc"] == pytest.approx(balanced_accuracy_score(labels, preds))
    per_class = predictions.per_class_accuracy()
    assert metrics["val/class_acc/bees"] == pytest.approx(per_class["bees"])
    assert metrics["val/class_acc/ants"] == pytest.approx(per_class["ants"])


def test_test_split_logs_the_same_metrics_as_validation(nine_to_one):
    dm = datamodule(nine_to_one, **SIZES)
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}
    model = TransferLearningModel(2, ["ants", "bees"], weights=None, optimizer=sgd)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False)  # fmt: skip
    (validated,) = trainer.validate(model, dataloaders=dm.val_dataloader(), verbose=False)
    (tested,) = trainer.test(model, dataloaders=dm.val_dataloader(), verbose=False)
    assert sorted(tested) == sorted(higher_is_better(model.test_metrics, ["ants", "bees"]))
    for key, value in tested.items():
        assert value == pytest.approx(validated[key.replace("test/", "val/", 1)])


def test_a_monitor_the_model_does_not_log_is_refused(nine_to_one, tmp_path):
    cfg = compose_train_config(
        [*FAST, f"data.data_dir={nine_to_one}", f"paths.output_dir={tmp_path}",
         "monitor=val/f1"]
    )  # fmt: skip
    with pytest.raises(Exception) as raised:  # Hydra wraps the model's UserError
        train(cfg)
    message = str(find_cause(raised.value, UserError))
    assert "monitor=val/f1 is not a metric the model logs" in message
    assert "val/f1_macro" in message


@pytest.mark.parametrize(("saved", "loading"), [("val/acc", "val/f1_macro"),
                                                ("val/loss", "val/f1_macro"),
                                                ("val/f1_macro", "val/acc")])  # fmt: skip
def test_a_checkpoint_of_another_monitor_loads_with_a_fresh_best(saved, loading):
    def model(monitor):
        mode = "min" if monitor == "val/loss" else "max"
        return TransferLearningModel(2, ["ants", "bees"], weights=None, monitor=monitor,
                                     monitor_mode=mode)  # fmt: skip

    old, new = model(saved), model(loading)
    if old.monitor_best is not None:
        old.monitor_best.update(torch.tensor(0.75))
    checkpoint = {"state_dict": old.state_dict(), "hyper_parameters": dict(old.hparams)}
    new.on_load_checkpoint(checkpoint)  # what Lightning calls before loading the weights
    new.load_state_dict(checkpoint["state_dict"])  # strict: no missing or unexpected keys
    if new.monitor_best is not None:
        new.monitor_best.update(torch.tensor(0.5))
        assert new.monitor_best.compute() == 0.5  # not the 0.75 of another metric
