"""Benchmark: images per second one loader worker delivers, uncached, by JPEG size.

Writes JPEG folders at several sizes (real photos resized, with a little noise so that they
compress like camera photos; synthetic photos without `--data-dir`), then times one worker
(the main process, one thread: what each DataLoader worker gets) reading every image
through the training and the validation pipeline of:

- `tutorial`: torchvision's `ImageFolder` with its default PIL loader and the tutorial's
  transforms;
- `template`: the template's split builder, `load_rgb` and transforms (`data.jpeg_draft=false`,
  the default);
- `template + jpeg_draft`: the same with `data.jpeg_draft=true`.

Speeds are images per second of the worker's CPU time (one thread), which is what a worker
delivers when it has a core to itself, however busy the rest of the machine is.

    python -m benchmarks.loader --data-dir data/hymenoptera_data [--sizes 500 1024 2048 4032]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from benchmarks.machine import describe
from src.data.images import is_image_name
from src.data.splits import build_splits, image_split
from src.data.transforms import Augment, Preprocessing, build_transform

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TUTORIAL = {
    "train": transforms.Compose([transforms.RandomResizedCrop(224),
                                 transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), transforms.Normalize(MEAN, STD)]),
    "val": transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)]),
}  # fmt: skip


def source_photos(data_dir: str | None, count: int, rng) -> list[Image.Image]:
    """`count` real photos from `data_dir`, or synthetic ones (gradients, shapes, noise)."""
    if data_dir:
        paths = sorted(p for p in Path(data_dir).rglob("*") if p.is_file() and is_image_name(p))
        chosen = rng.choice(len(paths), size=min(count, len(paths)), replace=False)
        return [Image.open(paths[i]).convert("RGB") for i in sorted(chosen)]
    photos = []
    for _ in range(count):
        _, x = np.mgrid[0:480, 0:640] / 480.0
        base = np.stack([np.sin(x * rng.uniform(2, 9) + c) for c in range(3)], axis=-1)
        photos.append(Image.fromarray(((base * 0.4 + 0.5) * 255).astype(np.uint8)))
    return photos


def write_folder(root: Path, photos: list[Image.Image], width: int, rng) -> Path:
    """`root/<width>/train/<class>/*.jpg`: the photos at `width` pixels wide (aspect kept),
    with sensor-like noise, JPEG quality 90; two classes so that ImageFolder accepts it."""
    folder = root / str(width)
    for i, photo in enumerate(photos):
        height = round(photo.height * width / photo.width)
        pixels = np.asarray(photo.resize((width, height), Image.Resampling.BICUBIC), np.float32)
        pixels += rng.normal(0, 3, pixels.shape)
        target = folder / "train" / f"class{i % 2}" / f"{i:03d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(target, quality=90)
    return folder


def images_per_second(dataset, seconds: float) -> float:
    """Throughput of one worker: batches of 4 from the main process, for about `seconds` of
    CPU time. Counted in this process's CPU time, not wall time: a worker with a core of its
    own reaches it, and other programs on a shared machine do not distort it."""
    loader = DataLoader(dataset, batch_size=4, shuffle=False, num_workers=0)
    images, started = 0, time.process_time()
    while time.process_time() - started < seconds:
        for batch, _ in loader:
            images += len(batch)
    return images / (time.process_time() - started)


def best_of(datasets: dict, seconds: float, rounds: int) -> dict[str, float]:
    """Each dataset's best throughput over `rounds` rounds that take turns, so that a
    neighbour's load on a shared machine slows every pipeline alike."""
    best = dict.fromkeys(datasets, 0.0)
    for _ in range(rounds):
        for name, dataset in datasets.items():
            best[name] = max(best[name], images_per_second(dataset, seconds / rounds))
    return best


def pipelines(folder: Path, stage: str) -> dict:
    pre = Preprocessing()
    template_transform = build_transform(pre, Augment() if stage == "train" else None)
    splits = build_splits(folder, wanted=("train",))
    return {
        "tutorial": datasets.ImageFolder(folder / "train", TUTORIAL[stage]),
        "template": image_split(splits, "train", template_transform)[0],
        "template + jpeg_draft": image_split(splits, "train", template_transform, 256)[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="photos to resize (default: synthetic photos)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1024, 2048, 4032],
                        help="image widths in pixels")  # fmt: skip
    parser.add_argument("--images", type=int, default=24, help="photos per size")
    parser.add_argument("--seconds", type=float, default=3.0, help="per pipeline and size")
    parser.add_argument("--rounds", type=int, default=3, help="turns the pipelines take")
    parser.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    rng = np.random.default_rng(0)
    photos = source_photos(args.data_dir, args.images, rng)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = tmp  # the image checks' verdicts stay in here
        for width in args.sizes:
            folder = write_folder(Path(tmp), photos, width, rng)
            for stage in ("train", "val"):
                torch.manual_seed(0)
                speeds = best_of(pipelines(folder, stage), args.seconds, args.rounds)
                rows.append({"width": width, "stage": stage, **speeds})
                said = ", ".join(f"{name} {speed:.0f}/s" for name, speed in speeds.items())
                print(f"[loader] {width} px, {stage}: {said}", flush=True)
    names = list(rows[0])[2:]
    lines = [
        f"One worker, uncached, images per CPU second ({describe()}):",
        "",
        "| image width | pipeline | " + " | ".join(names) + " | template / tutorial "
        "| draft / tutorial |",
        "| ---: | --- | " + " | ".join("---:" for _ in names) + " | ---: | ---: |",
    ]
    for r in rows:
        speeds = " | ".join(f"{r[name]:.0f}" for name in names)
        draft = r["template + jpeg_draft"]
        ratios = f"{r['template'] / r['tutorial']:.2f} | {draft / r['tutorial']:.2f}"
        lines.append(f"| {r['width']} | {r['stage']} | {speeds} | {ratios} |")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": describe(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
