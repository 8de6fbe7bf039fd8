"""The tutorial-vs-template benchmark runs both loops and reports comparable rows."""

import json
import subprocess
import sys

import pytest

from tests.helpers.config import ROOT

pytestmark = pytest.mark.slow


def test_benchmark_reports_both_loops_for_each_strategy(image_folder, tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, "-m", "src.bench.compare_tutorial", "--data-dir", str(image_folder),
         "--epochs", "1", "--out-dir", str(out), "--", "data.num_workers=0"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [(r["strategy"], r["loop"]) for r in rows] == [
        ("finetune", "tutorial"), ("finetune", "template"),
        ("frozen", "tutorial"), ("frozen", "template"),
    ]  # fmt: skip
    for tutorial, template in (rows[0:2], rows[2:4]):
        assert tutorial["wall_ratio_vs_tutorial"] is None
        expected = template["wall_time_s"] / tutorial["wall_time_s"]
        # Rows round times to 0.01 s; these runs take about a second.
        assert template["wall_ratio_vs_tutorial"] == pytest.approx(expected, rel=0.02)
        assert 0.0 <= template["best_val_acc"] <= 1.0
    assert "| frozen | 42 | template |" in (out / "bench.md").read_text()


def test_strategy_benchmark_reports_each_seed_of_a_multirun(image_folder, tmp_path):
    out = tmp_path / "strategies"
    result = subprocess.run(
        [sys.executable, "-m", "src.bench.strategies", "--data-dir", str(image_folder),
         "--models", "mobilenet_v3_small", "--strategies", "lp_ft", "--epochs", "2",
         "--seeds", "1", "2", "--out", str(out), "data.num_workers=0", "data.image_size=32",
         "data.resize_size=36"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sorted(out.glob("*/*/summary.json"))]
    assert [(s["strategy"], s["seed"], s["epochs_trained"]) for s in summaries] == [
        ("lp_ft", 1, 2), ("lp_ft", 2, 2),
    ]  # fmt: skip
    row = result.stdout.strip().splitlines()[-1]
    assert row.startswith("| mobilenet_v3_small | lp_ft |") and row.endswith("| 2 |")
