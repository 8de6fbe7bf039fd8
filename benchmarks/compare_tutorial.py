"""Benchmark: the tutorial's own loop against this template, side by side, in one run.

For each strategy and number of epochs it runs `benchmarks.tutorial_loop` and then
`src.train` (default settings; `--cache-features` adds `data.cache_features=true` to
frozen) as fresh processes on the same data, seed, epochs and initial weights, and prints
the whole process's time (imports and figures included), the fit's time, train images/s,
best validation accuracy and the template/tutorial ratio of process times. With
`--multirun-jobs N` it also runs N two-epoch finetune jobs as one local multirun and
reports what each job costs beyond its fit. Results go to `<out-dir>/bench.{json,md}`.

    python -m benchmarks.compare_tutorial --data-dir data/hymenoptera_data --epochs 25
    python -m benchmarks.compare_tutorial --data-dir data/hymenoptera_data --epochs 2 4 \\
        --multirun-jobs 4          # short runs (make bench-short)
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import describe


def timed(command: list[str], **kwargs) -> float:
    """Run `command` to completion; its wall time in seconds, process start to exit."""
    started = time.perf_counter()
    subprocess.run(command, check=True, **kwargs)
    return time.perf_counter() - started


def run_tutorial(args, strategy: str, epochs: int, seed: int, out: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.tutorial_loop", "--data-dir", args.data_dir,
               "--strategy", strategy, "--epochs", str(epochs), "--seed", str(seed),
               "--out", str(out)]  # fmt: skip
    if args.weights != "null":
        command += ["--weights", args.weights]
    process_s = timed(command)
    return {**json.loads(out.read_text()), "process_time_s": process_s}


def template_overrides(args, epochs: int) -> list[str]:
    return [f"data.data_dir={Path(args.data_dir).resolve()}", f"model.weights={args.weights}",
            f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", *args.template_args]  # fmt: skip


def run_template(args, strategy: str, epochs: int, seed: int, run_dir: Path) -> dict:
    extra = ["data.cache_features=true"] if strategy == "frozen" and args.cache_features else []
    command = [sys.executable, "-m", "src.train", f"strategy={strategy}", f"seed={seed}",
               f"hydra.run.dir={run_dir}", *extra, *template_overrides(args, epochs)]  # fmt: skip
    process_s = timed(command, stdout=subprocess.DEVNULL)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {**summary, "epochs": summary["epochs_trained"], "process_time_s": process_s}


def run_multirun(args, jobs: int, single: dict, sweep_dir: Path) -> dict:
    """`jobs` two-epoch finetune jobs (seeds 1..jobs) in one `src.train -m` process, against
    `single`: the same run alone in its own process."""
    seeds = ",".join(str(seed) for seed in range(1, jobs + 1))
    command = [sys.executable, "-m", "src.train", "-m", f"seed={seeds}", "strategy=finetune",
               f"hydra.sweep.dir={sweep_dir}", *template_overrides(args, 2)]  # fmt: skip
    process_s = timed(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fits = [json.loads((sweep_dir / str(job) / "summary.json").read_text())["fit_time_s"]
            for job in range(jobs)]  # fmt: skip
    alone = single["process_time_s"] - single["fit_time_s"]  # start-up + one job's end work
    return {
        "jobs": jobs,
        "process_time_s": round(process_s, 2),
        "sum_fit_time_s": round(sum(fits), 2),
        "single_run_non_fit_s": round(alone, 2),
        # What each job after the first adds beyond its fit: start, revalidation, figures.
        "per_extra_job_s": round((process_s - sum(fits) - alone) / max(1, jobs - 1), 2),
    }


def row(strategy: str, epochs: int, seed: int, loop: str, result: dict, reference) -> dict:
    images_per_s = result["train_size"] * result["epochs"] / result["fit_time_s"]
    ratio = None if reference is None else result["process_time_s"] / reference["process_time_s"]
    return {
        "strategy": strategy,
        "epochs": epochs,
        "seed": seed,
        "loop": loop,
        "process_time_s": round(result["process_time_s"], 2),
        "wall_time_s": round(result["wall_time_s"], 2),
        "fit_time_s": round(result["fit_time_s"], 2),
        "train_images_per_s": round(images_per_s, 1),
        "best_val_acc": round(result["best_val_acc"], 4),
        "process_ratio_vs_tutorial": None if ratio is None else round(ratio, 3),
    }


def markdown(rows: list[dict], multirun: dict | None) -> str:
    lines = [
        "| strategy | epochs | seed | loop | process s | fit s | train img/s | best val acc "
        "| template / tutorial |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = r["process_ratio_vs_tutorial"]
        lines.append(
            f"| {r['strategy']} | {r['epochs']} | {r['seed']} | {r['loop']} "
            f"| {r['process_time_s']:.1f} | {r['fit_time_s']:.1f} "
            f"| {r['train_images_per_s']:.1f} | {r['best_val_acc']:.4f} "
            f"| {'' if ratio is None else f'**{ratio:.2f}**'} |"
        )
    if multirun:
        m = multirun
        lines += [
            "",
            f"Multirun of {m['jobs']} two-epoch finetune jobs in one process: "
            f"{m['process_time_s']:.1f} s; their fits {m['sum_fit_time_s']:.1f} s; one run "
            f"alone spends {m['single_run_non_fit_s']:.1f} s outside its fit; each further job "
            f"adds {m['per_extra_job_s']:.1f} s beyond its fit.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data/hymenoptera_data")
    parser.add_argument("--weights", default="null", help="IMAGENET1K_V1, or null (random)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="one pair per seed")
    parser.add_argument("--strategies", nargs="+", default=["finetune", "frozen"])
    parser.add_argument("--cache-features", action="store_true",
                        help="frozen template runs with data.cache_features=true")  # fmt: skip
    parser.add_argument("--multirun-jobs", type=int, default=0,
                        help="also time a multirun of this many 2-epoch jobs")  # fmt: skip
    parser.add_argument("--out-dir", default=f"logs/bench/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    parser.add_argument("template_args", nargs="*", help="extra overrides for src.train")
    args = parser.parse_args()
    if not (Path(args.data_dir) / "train").is_dir():
        sys.exit(f"No train/ folder in --data-dir {args.data_dir}; point it at hymenoptera_data.")

    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, results = [], {}
    for strategy in args.strategies:
        for epochs in args.epochs:
            for seed in args.seeds:
                name = f"{strategy}_{epochs}ep_seed{seed}"
                print(f"[bench] {strategy}, {epochs} epochs, seed {seed}: tutorial loop ...")
                tutorial_out = out_dir / f"tutorial_{name}.json"
                tutorial = run_tutorial(args, strategy, epochs, seed, tutorial_out)
                print(f"[bench] {strategy}, {epochs} epochs, seed {seed}: template ...", flush=True)
                template = run_template(args, strategy, epochs, seed, out_dir / f"template_{name}")
                results[name] = template
                rows += [
                    row(strategy, epochs, seed, "tutorial", tutorial, None),
                    row(strategy, epochs, seed, "template", template, tutorial),
                ]
    multirun = None
    if args.multirun_jobs:
        single = results.get(f"finetune_2ep_seed{args.seeds[0]}")
        if single is None:
            print("[bench] a single run to compare with: finetune, 2 epochs ...", flush=True)
            single = run_template(args, "finetune", 2, args.seeds[0], out_dir / "template_single")
        print(f"[bench] multirun of {args.multirun_jobs} two-epoch jobs ...", flush=True)
        multirun = run_multirun(args, args.multirun_jobs, single, out_dir / "multirun")

    report = {"machine": describe(), "args": vars(args), "rows": rows, "multirun": multirun}
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(rows, multirun)
    (out_dir / "bench.md").write_text(table + "\n")
    print(f"[bench] {describe()}")
    print(table)
    print(f"[bench] results in {out_dir}")


if __name__ == "__main__":
    main()
