"""`src.export`: ONNX and TorchScript files that answer as their checkpoint does, carry their
class names and preprocessing, and label images in `src.predict` without Lightning."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule

from src.data.transforms import Preprocessing
from src.errors import UserError
from src.export import ParityError, export, export_model, metadata
from src.models.exported import ExportedModel
from src.predict import predict, write_csv
from tests.helpers.cli import run_module
from tests.helpers.config import ROOT

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


@pytest.fixture(scope="module")
def best_ckpt(trained_run) -> Path:
    return next((trained_run / "checkpoints").glob("best-*.ckpt"))


@pytest.fixture(scope="module")
def exported(best_ckpt, tmp_path_factory) -> dict[str, Path]:
    """The trained run's best checkpoint in both formats, checked on the run's val images."""
    out = tmp_path_factory.mktemp("exported")
    with pytest.MonkeyPatch.context() as patch:  # image-check verdicts stay out of ~/.cache
        patch.setenv("XDG_CACHE_HOME", str(out / "cache"))
        return {fmt: export(str(best_ckpt), fmt, str(out / f"model{suffix}"))[0]
                for fmt, suffix in SUFFIXES.items()}  # fmt: skip


def test_exported_files_carry_class_names_preprocessing_and_a_dynamic_batch(exported):
    import onnx
    import onnxruntime

    for path in exported.values():
        model = ExportedModel(path)
        assert model.class_names == ["ants", "bees"]
        assert (model.preprocessing["image_size"], model.preprocessing["resize_size"]) == (32, 36)
        assert model.preprocessing["mean"] == pytest.approx([0.485, 0.456, 0.406])
        for batch in (1, 3):
            probs = model(torch.randn(batch, 3, 32, 32))
            assert probs.shape == (batch, 2)
            assert probs.sum(dim=1) == pytest.approx(torch.ones(batch), abs=1e-5)
    # What any ONNX runtime, in any language, sees.
    props = {p.key: p.value for p in onnx.load(exported["onnx"]).metadata_props}
    assert json.loads(props["class_names"]) == ["ants", "bees"]
    session = onnxruntime.InferenceSession(str(exported["onnx"]))
    assert session.get_inputs()[0].shape == ["batch", 3, 32, 32]


def test_predictions_from_onnx_torchscript_and_checkpoint_agree(exported, best_ckpt, tmp_path):
    val = best_ckpt.parents[2] / "data" / "val"
    rows = {name: predict(str(path), [str(val)], top_k=2)
            for name, path in {**exported, "ckpt": best_ckpt}.items()}  # fmt: skip
    for name, labelled in rows.items():
        assert [r["path"] for r in labelled] == [r["path"] for r in rows["ckpt"]]
        assert [r["labels"] for r in labelled] == [r["labels"] for r in rows["ckpt"]], name
        for row, reference in zip(labelled, rows["ckpt"], strict=True):
            assert row["probs"] == pytest.approx(reference["probs"], abs=1e-4)
        write_csv(labelled, tmp_path / f"{name}.csv")
    headers = {(tmp_path / f"{n}.csv").read_text().splitlines()[0] for n in rows}
    assert headers == {"path,label_1,prob_1,label_2,prob_2,error"}


def test_an_onnx_file_labels_images_without_lightning_or_its_run(exported, best_ckpt, tmp_path):
    alone = tmp_path / "deploy" / "model.onnx"
    alone.parent.mkdir()
    shutil.copy(exported["onnx"], alone)
    images = best_ckpt.parents[2] / "data" / "val"
    # Any import of Lightning in the predict command fails in this process.
    script = textwrap.dedent(f"""
        import runpy, sys
        class NoLightning:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("lightning", "pytorch_lightning"):
                    raise ImportError("lightning is blocked in this test")
        sys.meta_path.insert(0, NoLightning())
        sys.argv = ["predict", "ckpt_path={alone}", "inputs={images}", "output=out.csv"]
        runpy.run_module("src.predict", run_name="__main__")
        assert not any(m.split(".")[0] == "lightning" for m in sys.modules)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8 images labelled, 0 not readable" in result.stdout
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 1 + 8


class ClassToken(LightningModule):
    """A network whose forward uses the batch size, as a ViT does with its class token."""

    def __init__(self) -> None:
        super().__init__()
        self.token = torch.nn.Parameter(torch.randn(1, 1, 3))
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.flatten(2).transpose(1, 2)  # (N, H*W, 3)
        tokens = torch.cat([self.token.expand(images.shape[0], -1, -1), pixels], dim=1)
        return self.fc(tokens.mean(dim=1))


@pytest.mark.parametrize("fmt", list(SUFFIXES))
def test_a_forward_that_uses_the_batch_size_exports_with_any_batch(tmp_path, fmt):
    model = ClassToken().eval()
    path = tmp_path / f"m{SUFFIXES[fmt]}"
    with open(path, "wb") as f:
        info = metadata(["a", "b"], Preprocessing(8, 8).as_dict())
        export_model(model, fmt, f, info, image_size=8)
    exported = ExportedModel(path)
    for batch in (1, 5):
        images = torch.randn(batch, 3, 8, 8)
        expected = model(images).softmax(dim=1)
        assert exported(images) == pytest.approx(expected.detach(), abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(SUFFIXES))
def test_export_passes_the_parity_check_on_real_images(best_ckpt, real_data, tmp_path, fmt):
    """Real photos at the real crop size, through the one image reader and val transform."""
    val = real_data / "val"
    images = [str(p) for c in ("ants", "bees") for p in sorted((val / c).iterdir())[:4]]
    output, parity = export(
        str(best_ckpt), fmt, str(tmp_path / f"m{SUFFIXES[fmt]}"), images,
        image_size=224, resize_size=256,
    )  # fmt: skip
    assert parity.ok and parity.images == 8 and parity.top1_agree == 8
    assert parity.max_diff <= 1e-4 and parity.batch_diff <= 1e-4
    assert ExportedModel(output).preprocessing["image_size"] == 224


def test_a_failed_parity_check_keeps_no_file(best_ckpt, tmp_path):
    output = tmp_path / "out" / "model.pt"
    output.parent.mkdir()
    with pytest.raises(ParityError, match=r"largest probability difference .* not written"):
        export(str(best_ckpt), "torchscript", str(output), tolerance=-1.0)
    assert list(output.parent.iterdir()) == []


def test_export_refuses_bad_input_with_a_message(best_ckpt, tmp_path):
    ckpt = str(best_ckpt)
    with pytest.raises(UserError, match=r"format=tflite .* \['onnx', 'torchscript'\]"):
        export(ckpt, "tflite")
    with pytest.raises(UserError, match=r"the folder .*missing does not exist"):
        export(ckpt, "onnx", str(tmp_path / "missing" / "m.onnx"))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}}, foreign)
    with pytest.raises(UserError, match="from another model"):
        export(str(foreign), "onnx", str(tmp_path / "m.onnx"))
    lone = Path(shutil.copy(best_ckpt, tmp_path / "lone.ckpt"))
    with pytest.raises(UserError, match="pass images="):
        export(str(lone), "onnx")


def test_export_refuses_a_checkpoint_of_an_unfinished_run(trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    ckpt = str(next((run / "checkpoints").glob("best-*.ckpt")))
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(
        json.dumps({**summary, "interrupted": True, "interrupted_by": "SIGTERM"})
    )
    with pytest.raises(UserError, match=r"was interrupted \(SIGTERM\).*resume="):
        export(ckpt, "onnx")
    (run / "summary.json").unlink()
    with pytest.raises(UserError, match="has not finished"):
        export(ckpt, "onnx")
    assert not list((run / "checkpoints").glob("*.onnx"))


def test_cli_reports_bad_input_with_exit_code_2(best_ckpt, tmp_path):
    result = run_module("src.export", f"ckpt_path={best_ckpt}", "format=tflite", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "format=tflite is not an export format" in output and "Traceback" not in output
