"""Benchmark: the tutorial's own loop against this template, side by side, in one run.

For each strategy it runs `src.bench.tutorial_loop` and then `src.train` (default fast
settings; frozen adds `data.cache_features=true`) as fresh processes on the same data,
seed, epochs and initial weights, and prints wall time, train images/s, best validation
accuracy and the template/tutorial ratio. Results go to `<out-dir>/bench.{json,md}`.

    python -m src.bench.compare_tutorial --data-dir data/hymenoptera_data --weights null
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

TEMPLATE_EXTRA = {"finetune": [], "frozen": ["data.cache_features=true"]}


def run_tutorial(args, strategy: str, seed: int, out: Path) -> dict:
    command = [sys.executable, "-m", "src.bench.tutorial_loop", "--data-dir", args.data_dir,
               "--strategy", strategy, "--epochs", str(args.epochs), "--seed", str(seed),
               "--out", str(out)]  # fmt: skip
    if args.weights != "null":
        command += ["--weights", args.weights]
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def run_template(args, strategy: str, seed: int, run_dir: Path) -> dict:
    command = [sys.executable, "-m", "src.train", f"strategy={strategy}",
               f"data.data_dir={Path(args.data_dir).resolve()}", f"model.weights={args.weights}",
               f"trainer.max_epochs={args.epochs}", f"seed={seed}",
               "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
               f"hydra.run.dir={run_dir}", *TEMPLATE_EXTRA[strategy],
               *args.template_args]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {**summary, "epochs": summary["epochs_trained"]}


def row(strategy: str, seed: int, loop: str, result: dict, reference: dict | None) -> dict:
    images_per_s = result["train_size"] * result["epochs"] / result["fit_time_s"]
    ratio = None if reference is None else result["wall_time_s"] / reference["wall_time_s"]
    return {
        "strategy": strategy,
        "seed": seed,
        "loop": loop,
        "wall_time_s": round(result["wall_time_s"], 2),
        "fit_time_s": round(result["fit_time_s"], 2),
        "train_images_per_s": round(images_per_s, 1),
        "best_val_acc": round(result["best_val_acc"], 4),
        "wall_ratio_vs_tutorial": None if ratio is None else round(ratio, 3),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| strategy | seed | loop | wall s | fit s | train img/s | best val acc | wall ratio |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = "" if r["wall_ratio_vs_tutorial"] is None else f"{r['wall_ratio_vs_tutorial']:.2f}"
        lines.append(
            f"| {r['strategy']} | {r['seed']} | {r['loop']} | {r['wall_time_s']:.1f} "
            f"| {r['fit_time_s']:.1f} | {r['train_images_per_s']:.1f} "
            f"| {r['best_val_acc']:.4f} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data/hymenoptera_data")
    parser.add_argument("--weights", default="null", help="IMAGENET1K_V1, or null (random)")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="one pair per seed")
    parser.add_argument("--strategies", nargs="+", default=["finetune", "frozen"])
    parser.add_argument("--out-dir", default=f"logs/bench/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    parser.add_argument("template_args", nargs="*", help="extra overrides for src.train")
    args = parser.parse_args()
    if not (Path(args.data_dir) / "train").is_dir():
        sys.exit(f"No train/ folder in --data-dir {args.data_dir}; point it at hymenoptera_data.")

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for strategy in args.strategies:
        for seed in args.seeds:
            name = f"{strategy}_seed{seed}"
            print(f"[bench] {strategy}, seed {seed}: tutorial loop ...", flush=True)
            tutorial = run_tutorial(args, strategy, seed, out_dir / f"tutorial_{name}.json")
            print(f"[bench] {strategy}, seed {seed}: template ...", flush=True)
            template = run_template(args, strategy, seed, out_dir / f"template_{name}")
            rows += [
                row(strategy, seed, "tutorial", tutorial, None),
                row(strategy, seed, "template", template, tutorial),
            ]

    machine = f"{platform.processor() or platform.machine()}, {platform.system()}"
    report = {"machine": machine, "args": vars(args), "rows": rows}
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(rows)
    (out_dir / "bench.md").write_text(table + "\n")
    print(table)
    print(f"[bench] results in {out_dir}")


if __name__ == "__main__":
    main()
