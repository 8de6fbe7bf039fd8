"""Lightning's MLflow logger for this template's runs (`logger=mlflow`): it checks the tracking
URI before training, and a run resumed in its directory continues the same MLflow run."""

import logging
import urllib.request
import warnings
from pathlib import Path

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from src.errors import UserError

log = logging.getLogger(__name__)

# MLflow's SQL store uses a loader option that SQLAlchemy 2.1 deprecates; nothing to act on.
warnings.filterwarnings("ignore", message=r"The ``noload`` loader strategy is deprecated")


class MLflowLogger(MLFlowLogger):
    """`MLFlowLogger` with one MLflow run per run directory (tagged `run_dir`, and `sweep_dir` in
    a sweep), named after it by default; a SQLite store keeps artifacts in `mlflow-artifacts/`
    beside its file. MLflow can neither change a parameter nor delete a metric, so a continued
    run keeps its parameters' first values and skips the metric steps it already holds. Its
    arguments are `MLFlowLogger`'s, and `run_dir`."""

    def __init__(self, run_dir: str, tracking_uri: str, run_name: str | None = None, **kwargs):
        run_dir = Path(run_dir).resolve()
        tags = kwargs["tags"] = {**(kwargs.get("tags") or {}), "run_dir": str(run_dir)}
        if (run_dir.parent / "multirun.yaml").is_file():  # Hydra writes it at a sweep's root
            tags["sweep_dir"] = str(run_dir.parent)
        if tracking_uri.startswith(("http://", "https://")):  # not MLflow's minutes of retries
            try:
                urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=5).close()
            except (OSError, ValueError) as err:  # urllib's URLError is an OSError
                raise UserError(
                    f"MLflow tracking server {tracking_uri} cannot be reached "
                    f"({getattr(err, 'reason', err)}). Start it (mlflow server --host 127.0.0.1 "
                    "--port 5000), correct logger.mlflow.tracking_uri, or train with another "
                    "logger (logger=many)."
                ) from err
        elif tracking_uri.startswith("sqlite:///"):  # three slashes: relative, four: absolute
            store = Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
            store.mkdir(parents=True, exist_ok=True)
            if not kwargs.get("artifact_location"):
                kwargs["artifact_location"] = str(store / "mlflow-artifacts")
        cwd = Path.cwd().resolve()
        name = run_dir.relative_to(cwd) if run_dir.is_relative_to(cwd) else run_dir
        self._logged_steps: dict[str, set[int]] = {}
        try:
            super().__init__(run_name=run_name or str(name), tracking_uri=tracking_uri, **kwargs)
            if rank_zero_only.rank == 0:  # also the check that the store answers
                self.continue_run(run_dir)
        except Exception as err:  # MLflow's errors for URIs it cannot use differ by scheme
            why = (str(err).strip().splitlines() or [""])[0][:300]
            raise UserError(
                f"MLflow tracking URI {tracking_uri} cannot be used ({type(err).__name__}: "
                f"{why}). Correct logger.mlflow.tracking_uri (a sqlite:///path/to/mlflow.db "
                "file or an http:// server), or train with another logger (logger=many)."
            ) from err

    def continue_run(self, run_dir: Path) -> None:
        """Log to the MLflow run this run directory already has (a resumed run), if any."""
        client = self._mlflow_client
        experiment = client.get_experiment_by_name(self._experiment_name)
        quote = '"' if "'" in str(run_dir) else "'"
        found = experiment and client.search_runs(
            [experiment.experiment_id], f"tags.run_dir = {quote}{run_dir}{quote}", max_results=1
        )
        if not found:
            return
        run = found[0]
        log.info("Continuing MLflow run %s (%s) of %s", run.info.run_name, run.info.run_id, run_dir)
        client.update_run(run.info.run_id, status="RUNNING")
        self._run_id = run.info.run_id
        self._logged_steps = {
            key: {m.step for m in client.get_metric_history(run.info.run_id, key)}
            for key in run.data.metrics
        }

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        """Log the parameters the run does not hold yet; name those it holds with another value."""
        params = {k: str(v)[:250] for k, v in _flatten_dict(_convert_params(params)).items()}
        held = self.experiment.get_run(self.run_id).data.params
        changed = ", ".join(
            f"{k} {held[k]} -> {v}" for k, v in params.items() if held.get(k, v) != v
        )
        if changed:
            log.warning("MLflow keeps the first value of parameters changed on resume: %s", changed)
        super().log_hyperparams({k: v for k, v in params.items() if k not in held})

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        """Log the metrics, except steps an earlier attempt of this run already logged."""
        logged = self._logged_steps
        if fresh := {k: v for k, v in metrics.items() if (step or 0) not in logged.get(k, ())}:
            super().log_metrics(fresh, step)
