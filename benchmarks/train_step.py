"""Micro-benchmark: images/s of one training step and one inference step of a backbone.

Compares fp32 and bf16 autocast, with and without channels_last, on this machine's CPU
(or GPU with --device cuda), at the tutorial's batch size. It tells which
`trainer.precision` and `model.channels_last` pay on your hardware:

    python -m benchmarks.train_step [--model resnet18] [--batch-size 4] [--steps 20] [--device cpu]

(`--model`: any torchvision classification model name.)
"""

import argparse
import itertools
import time

import torch
from torchvision.models import get_model


def images_per_second(step, batch_size: int, steps: int, device: torch.device) -> float:
    for _ in range(3):  # warm-up: kernel selection, allocator
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch_size * steps / (time.perf_counter() - started)


def measure(bf16: bool, channels_last: bool, args, device: torch.device) -> tuple[float, float]:
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = get_model(args.model, num_classes=2).to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(args.batch_size, 3, 224, 224, device=device)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(0, 2, (args.batch_size,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def train_step():
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def eval_step():
        with autocast:
            model(images)

    model.train()
    train = images_per_second(train_step, args.batch_size, args.steps, device)
    model.eval()
    return train, images_per_second(eval_step, args.batch_size, args.steps, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    print(f"{args.model}, device {device}, batch {args.batch_size}, {threads} threads")
    print("| precision | channels_last | train img/s | eval img/s |")
    print("| --- | --- | ---: | ---: |")
    for bf16, channels_last in itertools.product((False, True), repeat=2):
        train, evaluate = measure(bf16, channels_last, args, device)
        name = "bf16 autocast" if bf16 else "fp32"
        print(f"| {name} | {channels_last} | {train:.1f} | {evaluate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
