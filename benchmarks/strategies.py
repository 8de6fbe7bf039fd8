"""Benchmark fine-tuning strategies on several backbones: seconds per epoch, peak memory and
best validation accuracy over seeds.

    python -m benchmarks.strategies --data-dir PATH [--models resnet18 mobilenet_v3_large \\
        convnext_tiny] [--strategies finetune frozen lp_ft gradual] [--epochs 3] \\
        [--seeds 1 2 3] [--weights null] [--out DIR] [extra src.train overrides ...]

Each model and strategy is one Hydra multirun over the seeds,
`python -m src.train -m model=<model> strategy=<strategy> seed=1,2,3 ...` (or
`model.backbone=<model>` for a backbone without a `conf/model` file), in a fresh process
whose peak resident memory (the largest of its jobs) is read from the OS when it exits.
`lp_ft` probes for 1 epoch and `gradual` opens one stage per epoch, so that short runs see
every phase. Prints one Markdown table; each sweep's directory is under `--out`.
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


def sweep(model: str, strategy: str, args, extra: list[str]) -> list[dict]:
    """One multirun over the seeds; each job's summary.json fields plus the sweep's
    `peak_rss_gb` and `cpu_s` (user + system seconds of the whole process)."""
    sweep_dir = Path(args.out) / f"{model}_{strategy}"
    seeds = ",".join(str(s) for s in args.seeds)
    command = [
        sys.executable, "-m", "src.train", "-m", model_override(model), f"strategy={strategy}",
        f"seed={seeds}", f"model.weights={args.weights}", f"data.data_dir={args.data_dir}",
        f"trainer.max_epochs={args.epochs}", "figures.enabled=false",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep_dir}", *STRATEGY_OVERRIDES.get(strategy, []), *extra,
    ]  # fmt: skip
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / "bench.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource usage
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"Sweep failed ({' '.join(command)}); see {sweep_dir / 'bench.log'}")
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 1e9
    cpu = usage.ru_utime + usage.ru_stime
    jobs = sorted(sweep_dir.glob("*/summary.json"))
    return [{**json.loads(p.read_text()), "peak_rss_gb": peak, "cpu_s": cpu} for p in jobs]


def model_override(model: str) -> str:
    """`model=<name>` where conf/model/ has that file, else the backbone of `model=resnet18`."""
    has_config = (Path(__file__).parents[2] / "conf" / "model" / f"{model}.yaml").is_file()
    return f"model={model}" if has_config else f"model.backbone={model}"


def table(results: dict[tuple[str, str], list[dict]]) -> str:
    """Per model and strategy: mean wall s/epoch (training and validation), CPU s/epoch (of
    the whole process, start-up included), peak memory, accuracy over seeds."""
    header = ["model", "strategy", "s/epoch", "CPU s/epoch", "peak GB", "best val acc", "seeds"]
    rows = [header, ["---"] * 2 + ["---:"] * 5]
    for (model, strategy), runs in results.items():
        accs = [r["best_val_acc"] for r in runs]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        seconds = statistics.mean(r["fit_time_s"] / r["epochs_trained"] for r in runs)
        cpu = runs[0]["cpu_s"] / sum(r["epochs_trained"] for r in runs)
        memory = max(r["peak_rss_gb"] for r in runs)
        accuracy = f"{statistics.mean(accs):.3f} ± {spread:.3f}"
        cells = [f"{seconds:.1f}", f"{cpu:.1f}", f"{memory:.2f}", accuracy, str(len(runs))]
        rows.append([model, strategy, *cells])
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
            runs = sweep(model, strategy, args, extra)
            results[(model, strategy)] = runs
            accs = ", ".join(f"{r['best_val_acc']:.4f}" for r in runs)
            print(
                f"{model} {strategy}: best val acc {accs}; "
                f"{sum(r['fit_time_s'] for r in runs):.0f} s fitting, {runs[0]['cpu_s']:.0f} "
                f"CPU s in all, {runs[0]['peak_rss_gb']:.2f} GB",
                flush=True,
            )
    print(table(results))


if __name__ == "__main__":
    main()
