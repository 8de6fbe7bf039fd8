"""Run the project's commands as a user would, in a fresh Python process."""

import csv
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.config import ROOT


def run_module(module: str, *args: str, cwd: Path = ROOT, timeout: int = 900):
    """`python -m <module> <args>` from `cwd`, with this checkout importable."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m src.train <args>`."""
    return run_module("src.train", *args, cwd=cwd)


def epoch_rows(run_dir: Path, key: str) -> dict[int, float]:
    """One value of `key` per epoch from the CSV logger's metrics.csv."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get(key)]
    return {int(r["epoch"]): float(r[key]) for r in rows}
