"""Both notebooks run top to bottom against a small run and a small sweep; the sweep table
reads every job of a multirun, and the sweep summary groups repeated seeds into mean ± std."""

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from src.runs.sweep_summary import curves_by_strategy, load_sweep
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


def test_sweep_table_has_one_row_per_job_with_its_settings_and_result(sweep_dir):
    rows = load_sweep(sweep_dir)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert {(r["strategy"], r["seed"]) for r in rows} == {
        (s, seed) for s in ("finetune", "frozen") for seed in ("1", "2")
    }
    assert {(r["lr"], r["gamma"]) for r in rows} == {(0.01, 0.1)}  # not swept: from the config
    for row in rows:
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert row["best_val_acc"] == summary["best_val_acc"]
        assert row["seed"] == str(summary["seed"])  # the swept override, as typed
    curves = curves_by_strategy(rows, "val/acc")
    assert sorted(curves) == ["finetune", "frozen"]
    assert all(sorted(series) == [0, 1] for c in curves.values() for series in c.values())


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


def test_inspect_run_notebook_executes(trained_run, monkeypatch):
    nb = execute("inspect_run.ipynb", monkeypatch, RUN_DIR=str(trained_run))
    assert images_shown(nb) == 5  # curves, inputs, predictions, confusion matrix, top losses


def test_compare_sweep_notebook_executes(sweep_dir, monkeypatch):
    nb = execute("compare_sweep.ipynb", monkeypatch, SWEEP_DIR=str(sweep_dir))
    assert images_shown(nb) == 4  # mean ± std, heatmap, val/acc and val/loss side by side
    # rich prints to a notebook as display data, with a text/plain rendering
    outputs = nb.cells[3].outputs
    table = "".join(
        out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in outputs
    )
    assert "finetune" in table and "frozen" in table
