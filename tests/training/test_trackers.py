"""Experiment trackers: after a short real run, each tracker's own reader finds every epoch's
metrics, the config and the run's files; a resumed run continues the same tracker run."""

import json
import socket
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from tensorboard.plugins.hparams import plugin_data_pb2

from src.errors import UserError, find_cause
from src.runs.run_dir import read_metrics
from src.train import train
from tests.helpers.cli import run_cli
from tests.helpers.config import FAST, compose_train_config
from tests.helpers.images import make_image_folder
from tests.helpers.trackers import (
    Killed,
    mlflow_history,
    mlflow_runs,
    tensorboard_events,
    tensorboard_scalars,
    wandb_records,
)

FIGURES = {
    "augmented_batch", "confusion_matrix", "learning_curves", "top_losses", "val_predictions",
}  # fmt: skip
LOGGER_OPTIONS = ["csv", "many", "mlflow", "none", "tensorboard", "wandb"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """A finished 2-epoch run (with figures) logged to TensorBoard, MLflow and W&B at once:
    (run directory, MLflow tracking URI)."""
    root = tmp_path_factory.mktemp("tracked")
    data, run_dir = make_image_folder(root / "data"), root / "run"
    run_dir.mkdir()
    uri = f"sqlite:///{root}/mlflow.db"
    overrides = [
        *FAST, f"data.data_dir={data}", f"paths.output_dir={run_dir}", "trainer.max_epochs=2",
        "trainer.precision=32-true", "figures.enabled=true", "logger=[tensorboard,mlflow,wandb]",
        f"logger.mlflow.tracking_uri={uri}",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        patch.setenv("WANDB_CONFIG_DIR", str(root / "wandb-config"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        train(compose_train_config(overrides))  # which ends its W&B run
    return run_dir, uri


def per_epoch(values: dict[int, float]) -> list[float]:
    return [values[epoch] for epoch in sorted(values)]


def test_every_logger_option_keeps_the_csv_log():
    for option in LOGGER_OPTIONS:
        loggers = compose_train_config([f"logger={option}"]).logger or {}
        assert ("csv" in loggers) == (option != "none"), option
    assert set(compose_train_config([]).logger) == {"csv", "tensorboard"}


def test_an_unknown_logger_option_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException) as raised:
        compose_train_config(["logger=tensorbord"])
    for option in LOGGER_OPTIONS:
        assert f"\t{option}\n" in str(raised.value)


def test_tensorboard_holds_every_csv_metric_the_config_and_the_figures(tracked_run):
    run_dir, _ = tracked_run
    csv = read_metrics(run_dir / "csv" / "metrics.csv")
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "lr-SGD"} <= set(csv)
    for key, values in csv.items():
        assert [v for _, v in scalars[key]] == pytest.approx(per_epoch(values), abs=1e-6), key
    summary = json.loads((run_dir / "summary.json").read_text())
    assert scalars["hp/best_val_acc"][-1][1] == pytest.approx(summary["best_val_acc"])

    events = tensorboard_events(run_dir / "tensorboard")
    start = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == pytest.approx(0.001)
    assert hparams["strategy.name"].string_value == "finetune"
    assert set(events.Tags()["images"]) == {f"figures/{name}" for name in FIGURES}
    assert all(events.Images(f"figures/{name}")[0].width > 100 for name in FIGURES)


def test_mlflow_holds_one_run_with_params_metrics_and_files(tracked_run, tmp_path):
    from mlflow import MlflowClient

    run_dir, uri = tracked_run
    (run,) = mlflow_runs(uri)
    assert run.info.status == "FINISHED"
    assert run.data.tags["run_dir"] == str(run_dir.resolve())
    assert run.data.params["optimizer.lr"] == "0.001"
    assert run.data.params["data.image_size"] == "32"
    csv = read_metrics(run_dir / "csv" / "metrics.csv")
    for key, values in csv.items():
        logged = [v for _, v in mlflow_history(uri, run.info.run_id, key)]
        assert logged == pytest.approx(per_epoch(values), abs=1e-6), key

    client = MlflowClient(uri)
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "config.yaml", "figures", "checkpoints"} <= top
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert figures == {f"figures/{name}.png" for name in FIGURES}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.data.metrics["summary/best_val_acc"] == pytest.approx(summary["best_val_acc"])
    (ckpt,) = client.list_artifacts(run.info.run_id, "checkpoints")
    assert ckpt.path == f"checkpoints/{summary['best_ckpt'].rsplit('/', 1)[1]}"
    copy = client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))
    assert json.loads(Path(copy).read_text()) == summary


def test_wandb_writes_an_offline_run_with_every_epoch_config_and_figures(tracked_run):
    run_dir, _ = tracked_run
    history = [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]
    csv = read_metrics(run_dir / "csv" / "metrics.csv")
    for key in ("val/acc", "train/loss"):
        assert [item[key] for item in history if key in item] == pytest.approx(
            per_epoch(csv[key]), abs=1e-6
        )
    logged_figures = {key.split(".")[0] for item in history for key in item}
    assert {f"figures/{name}" for name in FIGURES} <= logged_figures

    state = wandb_records(run_dir, summary=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert state["config"]["optimizer.lr"] == 0.001
    assert state["summary"]["best_val_acc"] == pytest.approx(summary["best_val_acc"])


def test_resume_continues_the_same_tracker_runs_without_repeating_epochs(fast_config, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    recipe = ["logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={uri}",
              "trainer.max_epochs=2", "trainer.precision=32-true"]  # fmt: skip
    kill = ["+callbacks.kill._target_=tests.helpers.trackers.KillAt", "+callbacks.kill.epoch=1"]
    with pytest.raises(Killed):  # in epoch 1, after its learning rate was logged
        train(fast_config(*recipe, *kill))
    (run,) = mlflow_runs(uri)
    assert [step for step, _ in mlflow_history(uri, run.info.run_id, "lr-SGD")] == [0, 3]

    train(fast_config(*recipe, "ckpt_path=last"))
    run_dir = tmp_path / "run"
    csv = read_metrics(run_dir / "csv" / "metrics.csv")
    (resumed,) = mlflow_runs(uri)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    for key, values in csv.items():
        mlflow = mlflow_history(uri, run.info.run_id, key)
        assert [v for _, v in mlflow] == pytest.approx(per_epoch(values), abs=1e-6), key
        assert [v for _, v in scalars[key]] == pytest.approx(per_epoch(values), abs=1e-6), key
        assert [s for s, _ in scalars[key]] == [s for s, _ in mlflow]


def test_an_unreachable_mlflow_server_stops_the_run_before_training(image_folder, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = run_cli(*FAST, f"data.data_dir={image_folder}", "logger=mlflow",
                     f"logger.mlflow.tracking_uri={uri}",
                     f"hydra.run.dir={tmp_path}/run")  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert f"MLflow tracking server {uri} cannot be reached" in output
    assert "Traceback" not in output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_unusable_tracking_uri_is_named(fast_config):
    uri = "htp://127.0.0.1:5000"
    with pytest.raises(Exception) as raised:
        train(fast_config("logger=mlflow", f"logger.mlflow.tracking_uri={uri}"))
    error = find_cause(raised.value, UserError)
    assert error is not None and f"MLflow tracking URI {uri} cannot be used" in str(error)


def test_each_run_of_one_process_is_a_wandb_run_of_its_own(tmp_path, monkeypatch):
    """Two trainings in one process (a local multirun's jobs, a notebook) log to two W&B runs,
    each in its own run directory."""
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    data = make_image_folder(tmp_path / "data")
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        train(compose_train_config([*FAST, f"data.data_dir={data}", "logger=wandb",
                                    f"paths.output_dir={tmp_path / name}"]))  # fmt: skip
    for name in ("first", "second"):
        assert len(list((tmp_path / name / "wandb").glob("offline-run-*"))) == 1, name
