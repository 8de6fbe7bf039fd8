"""The modern fine-tuning ingredients as configuration: batch mixing with soft targets, policy
augmentations, an exponential moving average of the weights, early stopping, test-time
augmentation and class activation maps."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from src.data.transforms import Augment
from src.eval import evaluate
from src.inspection.predictions import predict_dataset
from src.models.checkpoint import load_model
from src.predict import predict
from src.train import train
from tests.helpers.config import compose_train_config
from tests.helpers.data import datamodule


def test_mixup_gives_soft_targets_whose_loss_is_the_mixed_cross_entropy(image_folder):
    dm = datamodule(image_folder, image_size=32, resize_size=36,
                    augment=Augment(mixup_alpha=0.4), batch_size=4)  # fmt: skip
    torch.manual_seed(0)
    collate = dm.train_dataloader().collate_fn
    both_classes = [dm.train_set[i] for i in (0, 1, len(dm.train_set) - 2, len(dm.train_set) - 1)]
    _, targets = collate(both_classes)
    assert targets.shape == (4, 2) and torch.allclose(targets.sum(dim=1), torch.ones(4))
    assert ((targets > 0) & (targets < 1)).any()  # mixed, not one-hot
    logits = torch.randn(4, 2)
    expected = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    assert F.cross_entropy(logits, targets) == pytest.approx(expected.item())


def test_cutmix_and_mixup_together_pick_one_per_batch():
    both = Augment(mixup_alpha=0.2, cutmix_alpha=1.0).mix_batches(3)
    assert type(both).__name__ == "RandomChoice" and len(both.transforms) == 2
    assert Augment().mix_batches(3) is None


def test_training_with_soft_targets_and_label_smoothing_logs_a_train_accuracy(fast_config):
    summary = train(fast_config("augment.mixup_alpha=0.4", "augment.cutmix_alpha=1.0",
                                "loss.label_smoothing=0.1", "trainer.max_epochs=2"))  # fmt: skip
    assert summary.epochs_trained == 2
    metrics = (Path(summary.best_ckpt).parents[1] / "csv" / "metrics.csv").read_text()
    assert "train/acc" in metrics.splitlines()[0]


@pytest.mark.parametrize("policy", ["trivial", "randaugment", "autoaugment", "augmix"])
def test_every_policy_runs_on_decoded_and_on_read_images(image_folder, policy):
    from hydra.utils import instantiate

    augment = instantiate(compose_train_config([f"augment={policy}"]).augment)
    for cached in (False, True):
        dm = datamodule(image_folder, image_size=32, resize_size=36, augment=augment,
                        cache_images=cached)  # fmt: skip
        image, _ = dm.train_set[0]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32


def test_ema_weights_are_the_ones_in_the_best_checkpoint(fast_config):
    """The best checkpoint holds the averaged weights, and re-validating it gives the val/acc
    logged at its epoch, which was also measured with the averaged weights."""
    cfg = fast_config("callbacks=[default,ema]", "callbacks.ema.decay=0.5",
                      "trainer.max_epochs=3", "optimizer.lr=0.05",
                      "trainer.precision=32-true")  # fmt: skip
    summary = train(cfg)
    saved = torch.load(summary.best_ckpt, map_location="cpu", weights_only=True)
    assert "current_model_state" in saved  # Lightning keeps the raw weights beside the average
    averaged, raw = saved["state_dict"], saved["current_model_state"]
    assert not torch.equal(averaged["head.weight"], raw["head.weight"])
    model = load_model(summary.best_ckpt)
    assert torch.equal(model.head.weight, averaged["head.weight"])
    assert summary.best_ckpt_val_acc == pytest.approx(summary.best_val_acc)
    assert evaluate(run_dir=cfg.paths.output_dir)["acc"] == pytest.approx(summary.best_val_acc)


def test_early_stopping_ends_the_run_and_says_so(fast_config):
    overrides = ["callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=1",
                 "callbacks.early_stopping.min_delta=0.1", "monitor=val/loss",
                 "monitor_mode=min", "optimizer.lr=1e-9", "trainer.max_epochs=6"]  # fmt: skip
    # A learning rate of 1e-9 never improves val/loss by 0.1: patience 1 stops after epoch 2.
    summary = train(fast_config(*overrides))
    assert summary.epochs_trained == 2 and summary.stopped_early and not summary.interrupted
    # Continued in place, it has nothing left to do: the same results.
    assert train(fast_config(*overrides, "ckpt_path=last")) == summary


def test_gradient_accumulation_steps_the_optimizer_once_per_n_batches(fast_config):
    """`trainer.accumulate_grad_batches` is a key of the trainer config (no `+`), and the
    per-step schedules count optimizer steps."""
    cfg = fast_config("trainer.accumulate_grad_batches=2", "trainer.max_epochs=1",
                      "++trainer.limit_train_batches=4", "scheduler=cosine")  # fmt: skip
    summary = train(cfg)
    ckpt = torch.load(summary.last_ckpt, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 2


def test_flip_tta_is_the_mean_of_the_image_and_its_mirror(trained_run):
    model = load_model(next((trained_run / "checkpoints").glob("best-*.ckpt")))
    from src.runs.run_dir import Run

    run = Run(trained_run)
    from src.inspection.predictions import val_images

    dataset = val_images(run.splits(), model.hparams.class_names, run.preprocessing)
    plain = predict_dataset(model, dataset)
    flipped = torch.stack([dataset[i][0].flip(-1) for i in range(len(dataset))])
    with torch.inference_mode():
        mirror = model(flipped).softmax(dim=1)
    tta = predict_dataset(model, dataset, tta="flip")
    assert torch.allclose(tta.probs, (plain.probs + mirror) / 2, atol=1e-6)
    results = evaluate(run_dir=str(trained_run), tta="flip")
    assert results["tta"]["acc"] == pytest.approx(tta.accuracy)
    assert results["acc"] == pytest.approx(plain.accuracy)
    rows = predict(str(trained_run / "checkpoints" / "last.ckpt"), [dataset.samples[0][0]],
                   top_k=1, tta="flip")  # fmt: skip
    assert rows[0]["error"] is None


def test_an_unknown_tta_names_the_choices(trained_run):
    from src.errors import UserError

    with pytest.raises(UserError, match=r"Invalid tta='five_crop'.*flip"):
        evaluate(run_dir=str(trained_run), tta="five_crop")


def test_class_activation_maps_lay_the_heat_over_the_image():
    from src.data.transforms import Preprocessing
    from src.inspection.cam import overlays
    from src.models.transfer import TransferLearningModel

    pre = Preprocessing(image_size=32, resize_size=32)
    half = torch.zeros(3, 32, 32)
    half[:, :, :16] = 1.0  # the left half white, the right half black
    images = torch.stack([(half - torch.tensor(pre.mean).view(3, 1, 1))
                          / torch.tensor(pre.std).view(3, 1, 1)])  # fmt: skip
    for backbone, kwargs in (("resnet18", {}), ("timm/vit_tiny_patch16_224", {"img_size": 32})):
        model = TransferLearningModel(2, ["a", "b"], backbone=backbone, weights=None,
                                      backbone_kwargs=kwargs)  # fmt: skip
        (shown,) = overlays(model, images, [0], pre)
        assert shown.shape == (3, 32, 32) and shown.min() >= 0 and shown.max() <= 1
        # Half image, half heat: the white half stays brighter than the black one.
        assert shown[:, :, :16].mean() > shown[:, :, 16:].mean() + 0.2


def test_the_cam_figure_is_written_with_the_runs_figures(fast_config):
    cfg = fast_config("figures.enabled=true", "figures.cam=true", "trainer.max_epochs=1")
    train(cfg)
    path = Path(cfg.paths.output_dir) / "figures" / "cam.png"
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert image.width > 300 and pixels.std() > 10  # a picture, not one flat colour
