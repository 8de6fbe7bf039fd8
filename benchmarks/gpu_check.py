"""GPU check: 25 finetune epochs on ants/bees with the defaults, and where the time went.

Runs `python -m src.train` (every default; only the data folder, weights and epochs are
given) as a fresh process with one extra callback, `StepTiming`, and prints the training
time, train images per second, the loader's share of the step time and the peak GPU memory:

    python -m benchmarks.gpu_check --data-dir data/hymenoptera_data      (make bench-gpu)

It stops with a message on a machine without a CUDA GPU; `--allow-cpu` runs it anyway
(the tests do, on tiny images).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

from benchmarks.machine import describe

TIMING_FILE = "step_timing.json"


class StepTiming(Callback):
    """Splits each training step into waiting for the batch and the step itself.

    The wait is the time from the end of one training step to the start of the next: the
    loader handing over a batch and its copy to the device. The step is forward, backward
    and optimizer update; on CUDA each step ends with a synchronize, so that queued GPU work
    is counted in the step that queued it. Writes `step_timing.json` into the run directory.
    """

    def __init__(self) -> None:
        self.wait_s = self.step_s = 0.0
        self.steps = 0
        self._mark: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._mark = time.perf_counter()  # the first wait of an epoch includes starting it

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.wait_s += now - self._mark
        self._mark = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.step_s += now - self._mark
        self.steps += 1
        self._mark = now

    def on_fit_end(self, trainer, pl_module) -> None:
        cuda = torch.cuda.is_available()
        timing = {
            "steps": self.steps,
            "wait_s": round(self.wait_s, 6),
            "step_s": round(self.step_s, 6),
            "loader_share": round(self.wait_s / max(1e-9, self.wait_s + self.step_s), 4),
            "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        }
        if trainer.is_global_zero:
            (Path(trainer.default_root_dir) / TIMING_FILE).write_text(json.dumps(timing))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data/hymenoptera_data")
    parser.add_argument("--weights", default="null", help="IMAGENET1K_V1, or null (random)")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--out-dir", default=f"logs/bench/gpu_{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a CUDA GPU")
    parser.add_argument("overrides", nargs="*", help="extra overrides for src.train")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        sys.exit(
            "No CUDA GPU on this machine: this check measures one (--allow-cpu to run anyway)."
        )
    if not (Path(args.data_dir) / "train").is_dir():
        sys.exit(f"No train/ folder in --data-dir {args.data_dir}; point it at hymenoptera_data.")

    run_dir = Path(args.out_dir).resolve()
    command = [sys.executable, "-m", "src.train", f"data.data_dir={Path(args.data_dir).resolve()}",
               f"model.weights={args.weights}", f"trainer.max_epochs={args.epochs}",
               "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}",
               "+callbacks.step_timing._target_=benchmarks.gpu_check.StepTiming",
               *args.overrides]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True)
    process_s = time.perf_counter() - started
    summary = json.loads((run_dir / "summary.json").read_text())
    timing = json.loads((run_dir / TIMING_FILE).read_text())
    images = summary["train_size"] * summary["epochs_trained"]
    peak = timing["peak_gpu_memory_bytes"]
    print(f"[gpu-check] {describe()}; precision {summary['precision']}")
    print(f"[gpu-check] training time (fit, incl. validation): {summary['fit_time_s']:.1f} s "
          f"for {summary['epochs_trained']} epochs; whole process {process_s:.1f} s")  # fmt: skip
    print(f"[gpu-check] train images/s: {images / summary['fit_time_s']:.0f}")
    print(f"[gpu-check] loader's share of step time: {timing['loader_share']:.1%} "
          f"({timing['wait_s']:.1f} s waiting, {timing['step_s']:.1f} s in "
          f"{timing['steps']} steps)")  # fmt: skip
    print(f"[gpu-check] peak GPU memory: {'-' if peak is None else f'{peak / 2**20:.0f} MiB'}")
    print(f"[gpu-check] best val/acc {summary['best_val_acc']:.4f}; run directory {run_dir}")


if __name__ == "__main__":
    main()
