"""The tutorial-vs-template benchmark runs both loops and reports comparable rows."""

import json
import subprocess
import sys

import pytest

from tests.helpers.config import ROOT

pytestmark = pytest.mark.slow


def test_benchmark_reports_both_loops_for_each_strategy_and_a_multirun(image_folder, tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, "-m", "src.bench.compare_tutorial", "--data-dir", str(image_folder),
         "--epochs", "1", "--multirun-jobs", "2", "--out-dir", str(out), "--",
         "data.num_workers=0", "data.image_size=32", "data.resize_size=36"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    rows = report["rows"]
    assert [(r["strategy"], r["epochs"], r["loop"]) for r in rows] == [
        ("finetune", 1, "tutorial"), ("finetune", 1, "template"),
        ("frozen", 1, "tutorial"), ("frozen", 1, "template"),
    ]  # fmt: skip
    for tutorial, template in (rows[0:2], rows[2:4]):
        assert tutorial["process_ratio_vs_tutorial"] is None
        expected = template["process_time_s"] / tutorial["process_time_s"]
        # Rows round times to 0.01 s; these runs take seconds.
        assert template["process_ratio_vs_tutorial"] == pytest.approx(expected, rel=0.02)
        assert template["process_time_s"] > template["fit_time_s"] > 0
        assert 0.0 <= template["best_val_acc"] <= 1.0
    multirun = report["multirun"]
    assert multirun["jobs"] == 2
    assert multirun["process_time_s"] > multirun["sum_fit_time_s"] > 0
    assert len(list((out / "multirun").glob("*/summary.json"))) == 2
    table = (out / "bench.md").read_text()
    assert "| frozen | 1 | 42 | template |" in table
    assert "Multirun of 2 two-epoch finetune jobs" in table
