"""Benchmark fine-tuning strategies on several backbones: seconds per epoch, peak memory and
best validation accuracy over seeds.

    python -m src.bench.strategies --data-dir PATH [--models resnet18 mobilenet_v3_large \\
        convnext_tiny] [--strategies finetune frozen lp_ft gradual] [--epochs 3] \\
        [--seeds 1 2 3] [--weights null] [--out DIR] [extra src.train overrides ...]

Each run is `python -m src.train model=<model> strategy=<strategy> seed=<seed> ...` (or
`model.backbone=<model>` for a backbone without a `conf/model` file) in a
fresh process, so its peak resident memory (read from the OS when it exits) is its own.
`lp_ft` probes for 1 epoch and `gradual` opens one stage per epoch, so that short runs see
every phase. Prints one Markdown table; each run's directory is under `--out`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

STRATEGY_OVERRIDES = {
    "finetune": [],
    "frozen": [],
    "lp_ft": ["strategy.probe_epochs=1"],
    "gradual": ["strategy.unfreeze_every=1"],
}


def run(model: str, strategy: str, seed: int, args, extra: list[str]) -> dict:
    """One training run; its summary.json fields plus `peak_rss_gb`."""
    run_dir = Path(args.out) / f"{model}_{strategy}_seed{seed}"
    command = [
        sys.executable, "-m", "src.train", model_override(model), f"strategy={strategy}",
        f"seed={seed}", f"model.weights={args.weights}", f"data.data_dir={args.data_dir}",
        f"trainer.max_epochs={args.epochs}", "figures=false", "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}", *STRATEGY_OVERRIDES.get(strategy, []), *extra,
    ]  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "bench.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource usage
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"Run failed ({' '.join(command)}); see {run_dir / 'bench.log'}")
    summary = json.loads((run_dir / "summary.json").read_text())
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if sys.platform == "darwin" else 1024
    return {**summary, "peak_rss_gb": usage.ru_maxrss * scale / 1e9}


def model_override(model: str) -> str:
    """`model=<name>` where conf/model/ has that file, else the backbone of `model=resnet18`."""
    has_config = (Path(__file__).parents[2] / "conf" / "model" / f"{model}.yaml").is_file()
    return f"model={model}" if has_config else f"model.backbone={model}"


def table(results: dict[tuple[str, str], list[dict]]) -> str:
    """Per model and strategy: mean s/epoch, the largest peak memory, accuracy over seeds."""
    header = ["model", "strategy", "s/epoch", "peak memory (GB)", "best val acc", "seeds"]
    rows = [header, ["---"] * 2 + ["---:"] * 4]
    for (model, strategy), runs in results.items():
        accs = [r["best_val_acc"] for r in runs]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        seconds = statistics.mean(r["fit_time_s"] / r["epochs_trained"] for r in runs)
        memory = max(r["peak_rss_gb"] for r in runs)
        accuracy = f"{statistics.mean(accs):.3f} ± {spread:.3f}"
        rows.append([model, strategy, f"{seconds:.1f}", f"{memory:.2f}", accuracy, str(len(runs))])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument(
        "--models", nargs="+", default=["resnet18", "mobilenet_v3_large", "convnext_tiny"]
    )
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGY_OVERRIDES))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--weights", default="null")
    parser.add_argument(
        "--out", default=f"logs/bench/strategies_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    )
    args, extra = parser.parse_known_args()
    results: dict[tuple[str, str], list[dict]] = {}
    for model in args.models:
        for strategy in args.strategies:
            for seed in args.seeds:
                result = run(model, strategy, seed, args, extra)
                results.setdefault((model, strategy), []).append(result)
                print(
                    f"{model} {strategy} seed {seed}: best val acc {result['best_val_acc']:.4f}, "
                    f"{result['fit_time_s']:.0f} s, {result['peak_rss_gb']:.2f} GB",
                    flush=True,
                )
    print(table(results))


if __name__ == "__main__":
    main()
