"""Read back what the experiment trackers stored, each with its own reader."""

import json
import subprocess
import sys
from pathlib import Path

from lightning.pytorch.callbacks import Callback


def tensorboard_events(log_dir: Path):
    """TensorBoard's EventAccumulator over a run's tensorboard/ folder, everything loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar the run's TensorBoard files hold."""
    events = tensorboard_events(log_dir)
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def mlflow_runs(tracking_uri: str, experiment: str = "transfer-learning") -> list:
    """Every MLflow run of `experiment` (mlflow.search_runs' Run objects), oldest first."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return sorted(runs, key=lambda run: run.info.start_time)


def mlflow_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return [(m.step, m.value) for m in MlflowClient(tracking_uri).get_metric_history(run_id, key)]


def wandb_records(run_dir: Path, summary: bool = False):
    """What W&B's own reader (`wandb leet inspect --json`) finds in the run's offline files:
    the list of records, or with `summary` the run's config, summary and state."""
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    result = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json",
         *(["--summary"] if summary else []), str(offline)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    if summary:
        return json.loads(result.stdout)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


class Killed(Exception):
    """Raised by `KillAt`, as a SIGKILL would stop training: without saving anything."""


class KillAt(Callback):
    """Stop training with an exception at the start of batch `batch` of epoch `epoch`, after
    that epoch has begun logging (its learning rate), like a kill in mid-epoch."""

    def __init__(self, epoch: int, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise Killed(f"killed in epoch {self.epoch}")
