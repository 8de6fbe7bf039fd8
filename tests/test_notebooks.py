"""Both notebooks run top to bottom against a small run and a small sweep; the sweep notebook
shows every job of a multirun, and the sweep summary groups repeated seeds into mean ± std."""

import csv
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers.config import FAST, ROOT
from tests.helpers.images import make_image_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """2 strategies x 2 seeds, 2 epochs each, on generated data (one process)."""
    root = tmp_path_factory.mktemp("sweep")
    data = make_image_folder(root / "data")
    result = subprocess.run(
        [sys.executable, "-m", "src.train", "-m", *FAST, f"data.data_dir={data}",
         "strategy=finetune,frozen", "seed=1,2", "optimizer.lr=0.01", "trainer.max_epochs=2",
         f"hydra.sweep.dir={root / 'multirun'}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "multirun"


def test_sweep_summary_reports_mean_and_std_over_the_seeds(sweep_dir):
    with open(sweep_dir / "sweep_summary_groups.csv") as f:
        groups = list(csv.DictReader(f))
    assert len(groups) == 2  # finetune and frozen, each over seeds 1 and 2
    for group in groups:
        strategy = [o for o in group["overrides"].split() if o.startswith("strategy=")]
        assert "seed=" not in group["overrides"] and len(strategy) == 1
        summaries = [json.loads((sweep_dir / job / "summary.json").read_text())
                     for job in group["jobs"].split()]  # fmt: skip
        assert sorted(s["seed"] for s in summaries) == [1, 2]
        assert {s["strategy"] for s in summaries} == {strategy[0].removeprefix("strategy=")}
        accs = [s["best_val_acc"] for s in summaries]
        assert (group["n"], group["seeds"]) == ("2", "1 2")
        assert float(group["best_val_acc_mean"]) == pytest.approx(statistics.mean(accs))
        assert float(group["best_val_acc_std"]) == pytest.approx(statistics.stdev(accs))
    means = [float(group["best_val_acc_mean"]) for group in groups]
    assert means == sorted(means, reverse=True)
    assert "## Mean ± std over seeds and folds" in (sweep_dir / "sweep_summary.md").read_text()


def execute(notebook: str, monkeypatch, **env: str) -> nbformat.NotebookNode:
    """Run every cell of `notebook` with `env` set for its kernel; return it with outputs."""
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells), "commit notebooks without outputs"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb


def images_shown(nb) -> int:
    return sum("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))


def shown_text(cell) -> str:
    """What a cell printed; rich prints to a notebook as display data, with a text/plain
    rendering (its bold headers as ANSI escapes)."""
    text = "".join(
        out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in cell.outputs
    )
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the rich tables in `text`, as lists of cells."""
    lines = [line for line in text.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in lines]


def test_inspect_run_notebook_executes(trained_run, monkeypatch):
    nb = execute("inspect_run.ipynb", monkeypatch, RUN_DIR=str(trained_run))
    assert images_shown(nb) == 5  # curves, inputs, predictions, confusion matrix, top losses


def test_compare_sweep_notebook_shows_the_jobs_the_groups_and_four_figures(sweep_dir, monkeypatch):
    nb = execute("compare_sweep.ipynb", monkeypatch, SWEEP_DIR=str(sweep_dir))
    # The jobs, best val/acc first: job, the swept strategy and seed, lr, gamma, results.
    jobs = table_rows(shown_text(nb.cells[4]))
    assert sorted(row[0] for row in jobs) == ["0", "1", "2", "3"]
    accs = []
    for job, *cells in jobs:
        summary = json.loads((sweep_dir / job / "summary.json").read_text())
        accs.append(summary["best_val_acc"])
        assert cells == [
            summary["strategy"], str(summary["seed"]), "0.01", "0.1", "completed",
            f"{summary['best_val_acc']:.4g}", str(summary["best_epoch"]), "2",
            f"{summary['fit_time_s']:.4g}",
        ]  # fmt: skip
    assert accs == sorted(accs, reverse=True)
    # The groups over seeds: one per strategy, of two completed jobs each.
    groups = table_rows(shown_text(nb.cells[6]))
    assert sorted((row[0], row[1], row[5]) for row in groups) == [
        ("strategy=finetune", "2", "1 2"), ("strategy=frozen", "2", "1 2"),
    ]  # fmt: skip
    # mean ± std, the heatmap (a panel per strategy and a colorbar), val/acc and val/loss
    outputs = [out for cell in nb.cells for out in cell.get("outputs", [])]
    figures = [out.data["text/plain"] for out in outputs if "image/png" in out.get("data", {})]
    axes = [int(re.search(r"with (\d+) Axes", figure)[1]) for figure in figures]
    assert axes == [1, 3, 2, 2]
