"""Download the tutorial's hymenoptera (ants vs bees) zip with torchvision's helper, and check
its extracted tree."""

import hashlib
import shutil
import tempfile
from pathlib import Path
from urllib.error import URLError

from torchvision.datasets.utils import download_and_extract_archive

from src.errors import UserError


def tree_sha256(root: Path) -> str:
    """SHA-256 over the sorted relative paths and contents of every file under `root`: the
    zip's page gives no checksum, and this also catches a truncated or partial extraction."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def download_image_folder(data_dir: Path, url: str, tree_sha256_expected: str | None) -> None:
    """Download `url` (a zip holding one top-level folder) and place that folder at `data_dir`.

    Extraction happens in a temporary folder next to `data_dir`, so an interrupted download
    never leaves a half-filled `data_dir` behind that later runs would mistake for data.
    """
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir.parent, prefix=".download-") as tmp:
        try:
            download_and_extract_archive(url, download_root=tmp, remove_finished=True)
        except (URLError, OSError) as err:
            raise UserError(
                f"Could not download the dataset from {url} ({err}).\n"
                f"Without internet access, download the zip elsewhere, unzip it so that "
                f"{data_dir}/train and {data_dir}/val exist, or point data.data_dir at a copy."
            ) from err
        folders = [p for p in Path(tmp).iterdir() if p.is_dir() and not p.name.startswith("__")]
        if len(folders) != 1:
            raise UserError(f"Expected one top-level folder in {url}, found {len(folders)}.")
        actual = tree_sha256(folders[0]) if tree_sha256_expected is not None else None
        if actual != tree_sha256_expected:
            raise UserError(
                f"The data downloaded from {url} does not match its checksum "
                f"(tree SHA-256 {actual}, expected {tree_sha256_expected}). "
                "The download may be corrupt; delete it and run again."
            )
        shutil.move(str(folders[0]), data_dir)
