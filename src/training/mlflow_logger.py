"""Lightning's MLflow logger, made safe for this template's runs (`logger=mlflow`, the [mlflow]
extra): it fails before training when the tracking URI cannot be reached, and a run resumed in
its directory continues the same MLflow run instead of starting a second one.

Lightning's `MLFlowLogger(run_id=...)` alone cannot serve: a resumed run must first find its
id (by the run_dir tag set here), and MLflow can neither delete a logged value nor change a
parameter. So on resume, metric steps the run already holds are not sent again (the learning
rate of the epoch the kill cut short), and parameters keep their first value; a changed one
(`trainer.max_epochs=40` to extend a run) is listed in the log instead.
"""

import logging
import os
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from src.errors import UserError

log = logging.getLogger(__name__)

# MLflow's SQL store uses a loader option that SQLAlchemy 2.1 deprecates; nothing to act on.
warnings.filterwarnings("ignore", message=r"The ``noload`` loader strategy is deprecated")

# The tag that ties an MLflow run to its run directory, found again on resume.
RUN_DIR_TAG = "run_dir"
SWEEP_DIR_TAG = "sweep_dir"


class MLflowLogger(MLFlowLogger):
    """`MLFlowLogger` for the run in `run_dir`: one MLflow run per run directory.

    `run_name=None` names the run after its directory; sweep jobs are tagged with their sweep
    directory (`tags.sweep_dir`), so the MLflow UI can filter or group a sweep's jobs.
    `artifact_location=None` keeps a SQLite store's artifacts in `mlflow-artifacts/` beside the
    database file (MLflow's default would be ./mlruns in the current directory).
    """

    def __init__(
        self,
        run_dir: str,
        tracking_uri: str,
        experiment_name: str = "transfer-learning",
        run_name: str | None = None,
        artifact_location: str | None = None,
        tags: dict | None = None,
        **kwargs,
    ) -> None:
        run_dir_path = Path(run_dir).resolve()
        tags = {**(tags or {}), RUN_DIR_TAG: str(run_dir_path)}
        if (run_dir_path.parent / "multirun.yaml").is_file():  # Hydra writes it at a sweep's root
            tags[SWEEP_DIR_TAG] = str(run_dir_path.parent)
        try:
            super().__init__(
                experiment_name=experiment_name,
                run_name=run_name or display_path(run_dir_path),
                tracking_uri=prepare_store(tracking_uri),
                tags=tags,
                artifact_location=artifact_location or local_artifact_location(tracking_uri),
                **kwargs,
            )
        except Exception as err:  # MLflow's errors for URIs it cannot use differ by scheme
            raise unusable(tracking_uri, err) from err
        self._logged_steps: dict[str, set[int]] = {}
        if rank_zero_only.rank == 0:
            self._run_id = self.earlier_run(run_dir_path)
        self._continued = self._run_id is not None

    def earlier_run(self, run_dir: Path) -> str | None:
        """The id of the MLflow run this run directory already has (a resumed run), else None.

        Looking it up is also the check that the store answers, before any training."""
        quote = '"' if "'" in str(run_dir) else "'"
        try:
            experiment = self._mlflow_client.get_experiment_by_name(self._experiment_name)
            if experiment is None:
                return None
            runs = self._mlflow_client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.{RUN_DIR_TAG} = {quote}{run_dir}{quote}",
                max_results=1,
            )
        except Exception as err:  # the store's own errors differ by backend
            raise unusable(self._tracking_uri, err) from err
        if not runs:
            return None
        run = runs[0].info
        log.info("Continuing MLflow run %s (%s) of %s", run.run_name, run.run_id, run_dir)
        self._mlflow_client.update_run(run.run_id, status="RUNNING")
        self._logged_steps = {
            key: {m.step for m in self._mlflow_client.get_metric_history(run.run_id, key)}
            for key in runs[0].data.metrics
        }
        return run.run_id

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        """Log the parameters; a continued run gets those it lacks (MLflow refuses changes)."""
        if not self._continued:
            super().log_hyperparams(params)
            return
        held = self.experiment.get_run(self._run_id).data.params
        changed = sorted(k for k, v in params.items() if k in held and held[k] != str(v)[:250])
        if changed:
            log.warning(
                "MLflow keeps the first value of parameters changed on resume: %s",
                ", ".join(f"{k} {held[k]} -> {params[k]}" for k in changed),
            )
        new = {k: v for k, v in params.items() if k not in held}
        if new:
            super().log_hyperparams(new)

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        """Log the metrics, except steps an earlier attempt of this run already logged."""
        step = step or 0
        fresh = {k: v for k, v in metrics.items() if step not in self._logged_steps.get(k, ())}
        if fresh:
            super().log_metrics(fresh, step)


def unusable(uri: str, err: Exception) -> UserError:
    if isinstance(err, UserError):
        return err
    return UserError(
        f"MLflow tracking URI {uri} cannot be used ({type(err).__name__}: "
        f"{str(err).strip().splitlines()[0][:300]}). Correct logger.mlflow.tracking_uri "
        "(a sqlite:///path/to/mlflow.db file or an http:// server), or train with another "
        "logger (logger=many)."
    )


def prepare_store(uri: str) -> str:
    """Check that a server answers (a quick /health request, not MLflow's minutes of retries)
    and create the folder of a SQLite file; returns the URI unchanged."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
                pass
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise UserError(
                f"MLflow tracking server {uri} cannot be reached ({reason}). Start it "
                "(mlflow server --host 127.0.0.1 --port 5000), correct "
                "logger.mlflow.tracking_uri, or train with another logger (logger=many)."
            ) from err
    elif uri.startswith("sqlite:///"):
        Path(sqlite_path(uri)).parent.mkdir(parents=True, exist_ok=True)
    return uri


def sqlite_path(uri: str) -> str:
    """The database file of a sqlite:/// URI (three slashes: relative, four: absolute)."""
    return uri.removeprefix("sqlite:///")


def local_artifact_location(uri: str) -> str | None:
    """`mlflow-artifacts/` beside a SQLite store's file; None (the server decides) otherwise."""
    if not uri.startswith("sqlite:///"):
        return None
    return str((Path(sqlite_path(uri)).parent / "mlflow-artifacts").resolve())


def display_path(path: Path) -> str:
    """`path` relative to the current directory when it is below it, else absolute."""
    try:
        return str(path.relative_to(Path(os.getcwd()).resolve()))
    except ValueError:
        return str(path)
