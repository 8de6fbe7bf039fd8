"""Run a model that `src.export` wrote (ONNX or TorchScript) without its run or Lightning, which
this module must not import: `src.predict` labels images with an ONNX file on machines that
have only onnxruntime, torch and torchvision (a test checks it)."""

import json
import warnings
import zipfile
from pathlib import Path

import torch

from src.errors import UserError

# Metadata keys (ONNX) and extra files (TorchScript, with ".json") holding JSON values.
METADATA_KEYS = ("class_names", "preprocessing")
INPUT_NAME, OUTPUT_NAME = "images", "probs"


def exported_format(path: str | Path) -> str | None:
    """ "onnx" for a `.onnx` file, "torchscript" for a TorchScript archive, else None
    (a Lightning checkpoint: also a zip archive, but without TorchScript's constants.pkl)."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("/constants.pkl") for name in archive.namelist()):
                return "torchscript"
    return None


class ExportedModel:
    """An exported classifier: call it with normalised images to get class probabilities. Its
    `class_names` and `preprocessing` come from the ONNX model's metadata (`metadata_props`,
    which any ONNX runtime lists) or the TorchScript archive's extra files."""

    def __init__(self, path: str | Path, fmt: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.format = fmt or exported_format(self.path)
        if not self.path.is_file():
            raise UserError(f"Exported model not found: {self.path}")
        if self.format not in ("onnx", "torchscript"):
            raise UserError(f"{self.path} is neither an ONNX file nor a TorchScript archive.")
        metadata = self._open_onnx() if self.format == "onnx" else self._open_torchscript()
        if missing := [key for key in METADATA_KEYS if key not in metadata]:
            raise UserError(
                f"{self.path} lacks the {' and '.join(missing)} that src.export stores with the "
                "model; export the checkpoint with python -m src.export to label images with it."
            )
        self.class_names: list[str] = json.loads(metadata["class_names"])
        self.preprocessing: dict = json.loads(metadata["preprocessing"])

    def _open_onnx(self) -> dict:
        import onnxruntime

        try:
            self._session = onnxruntime.InferenceSession(
                str(self.path), providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise UserError(f"{self.path} cannot be read as an ONNX model: {err}") from err
        return self._session.get_modelmeta().custom_metadata_map

    def _open_torchscript(self) -> dict:
        files = {f"{key}.json": "" for key in METADATA_KEYS}
        with warnings.catch_warnings():
            # torch marks TorchScript deprecated in favour of torch.export; it still loads.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated")
            try:
                self._module = torch.jit.load(self.path, map_location="cpu", _extra_files=files)
            except RuntimeError as err:
                raise UserError(f"{self.path} cannot be read as TorchScript: {err}") from err
        return {name.removesuffix(".json"): data for name, data in files.items() if data}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities (N, classes) for normalised images (N, 3, H, W), float32 on the CPU."""
        images = images.float().contiguous()
        if self.format == "onnx":
            (probs,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
            return torch.from_numpy(probs)
        return self._module(images)
