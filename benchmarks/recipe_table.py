"""The tables of docs/recipes.md from the multiruns of `benchmarks/recipes.sh`: best validation
accuracy mean ± std over the jobs of each setting, the mean epochs to the best one, and the
seconds per epoch.

    python -m benchmarks.recipe_table logs/recipes [--tta tutorial modern]

`--tta`: for those settings also evaluate each job's best checkpoint with `tta=flip`. Settings
run over `data.fold` (cross-validation) get a second table, fold by fold, for a paired reading.
"""

import argparse
import statistics
from pathlib import Path

from src.runs.run_dir import SWEEP_FILE, Run, sweep_runs


def jobs(sweep_dir: Path) -> list[Run]:
    """The finished jobs of a multirun, in job order."""
    return [run for run in sweep_runs(sweep_dir) if run.summary and not run.summary.interrupted]


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "-"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def rows(name: str, done: list[Run], tta: bool) -> list[str]:
    """One row per strategy of the multirun's finished jobs (one for most settings)."""
    by_strategy: dict[str, list[Run]] = {}
    for run in done:
        by_strategy.setdefault(run.summary.strategy, []).append(run)
    return [row(name if len(by_strategy) == 1 else f"{name}: {strategy}", done, tta)
            for strategy, done in by_strategy.items()]  # fmt: skip


def row(name: str, done: list[Run], tta: bool) -> str:
    summaries = [run.summary for run in done]
    accs = [s.best_val_acc for s in summaries]
    per_epoch = [s.fit_time_s / s.epochs_trained for s in summaries if s.epochs_trained]
    best_epochs = statistics.fmean(s.best_epoch + 1 for s in summaries)
    cells = [name, str(len(done)), mean_std(accs), f"{best_epochs:.1f}",
             f"{statistics.fmean(per_epoch):.1f}" if per_epoch else "-", ""]  # fmt: skip
    if tta:
        from src.eval import evaluate

        cells[-1] = mean_std([evaluate(run_dir=str(run.path), tta="flip")["tta"]["acc"]
                              for run in done])  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def by_fold(done: list[Run]) -> dict[int, list[float]]:
    """Best val acc of each finished job by its `data.fold`; empty when the setting has no folds."""
    found: dict[int, list[float]] = {}
    for run in done:
        fold = run.config.get("data", {}).get("fold")
        if fold is not None:
            found.setdefault(fold, []).append(run.summary.best_val_acc)
    return found


def fold_table(cv: dict[str, dict[int, list[float]]]) -> list[str]:
    """One row per fold, one column per cross-validated setting: the mean over its seeds."""
    names = sorted(cv)
    lines = ["| fold | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for fold in sorted({f for folds in cv.values() for f in folds}):
        cells = [mean_std(cv[name].get(fold, [])) for name in names]
        lines.append(f"| {fold} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the OUT_DIR of benchmarks/recipes.sh")
    parser.add_argument("--tta", nargs="*", default=[], help="settings to evaluate with tta=flip")
    args = parser.parse_args()
    print(
        "| setting | jobs | best val acc (mean ± std) | epochs to best | s/epoch | with tta=flip |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    sweeps = {p.name: jobs(p) for p in sorted(args.root.iterdir()) if (p / SWEEP_FILE).is_file()}
    for name, done in sweeps.items():
        for line in rows(name, done, name in args.tta):
            print(line)
    cv = {name: folds for name, done in sweeps.items() if (folds := by_fold(done))}
    if cv:
        print("\nBest val acc by fold (mean ± std over the seeds):\n", *fold_table(cv), sep="\n")


if __name__ == "__main__":
    main()
