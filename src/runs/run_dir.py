"""Read what `src.train` leaves behind: a run directory, or a multirun (sweep) directory. Files
are found through the run's own directory, so a run that was moved or copied still loads."""

import csv
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

from omegaconf import OmegaConf

from src.data.splits import SPLIT_NAMES, SPLITS_FILE, Splits, SplitSettings, build_splits
from src.data.transforms import Augment, Preprocessing
from src.errors import UserError
from src.runs.summary import RunSummary, read_json

# Written into a multirun job's directory when the job ends (see src.runs.sweep).
STATUS_FILE = "job_status.json"
# A multirun's config, with its command-line arguments, at its root (see src.runs.sweep).
SWEEP_FILE = "multirun.yaml"


@dataclass
class Run:
    """One training run directory (`hydra.run.dir`, or one job of a multirun); `check=False`
    accepts a sweep job that failed before writing its config.yaml."""

    path: Path
    check: bool = True

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser()
        if self.check and not (self.path / "config.yaml").is_file():
            raise UserError(
                f"{self.path} is not a run directory of src.train: it has no config.yaml. "
                "Pass the folder a training run wrote (hydra.run.dir, e.g. logs/runs/<date>)."
            )

    @cached_property
    def config(self) -> dict:
        """The run's resolved config, as plain dicts and lists ({} if it has none yet)."""
        return read_yaml(self.path / "config.yaml") or {}

    @cached_property
    def summary(self) -> RunSummary | None:
        """The run's summary.json; None when the run did not finish (or crashed)."""
        return RunSummary.read(self.path)

    @cached_property
    def overrides(self) -> list[str]:
        """The command-line overrides Hydra recorded for this run (`.hydra/overrides.yaml`)."""
        return list(read_yaml(self.path / ".hydra" / "overrides.yaml") or [])

    @cached_property
    def status(self) -> dict | None:
        """How a sweep job ended (`job_status.json`); None while it runs, or if it was killed."""
        return read_json(self.path / STATUS_FILE)

    @property
    def class_names(self) -> list[str] | None:
        return self.summary.class_names if self.summary else None

    @property
    def best_ckpt(self) -> Path:
        """The best checkpoint, as the run's summary names it, inside this directory."""
        path = self.summary.best_ckpt_path(self.path) if self.summary else None
        if path is not None and path.is_file():
            return path
        if self.summary is None:
            why = "has no summary.json (the run has not finished, or crashed)"
        elif path is None:
            why = "was trained without a best checkpoint (callbacks=none or fast_dev_run)"
        else:
            why = f"lacks the best checkpoint its summary names ({path.name})"
        raise UserError(
            f"Run {self.path} {why}. Pass a checkpoint file with ckpt_path=... instead."
        )

    @property
    def preprocessing(self) -> Preprocessing:
        """How the run prepared its images, as its summary records it; for a run of an older
        version of the template, its sizes (224 / 256 without) and ImageNet's statistics."""
        if self.summary is not None and self.summary.preprocessing:
            return Preprocessing(**self.summary.preprocessing)
        data = self.config.get("data", {})
        return Preprocessing(data.get("image_size") or 224, data.get("resize_size") or 256)

    @property
    def augment(self) -> Augment:
        """The run's training augmentation (`conf/augment`)."""
        from hydra.utils import instantiate

        return instantiate(self.config["augment"])

    def splits(self, data_dir: str | Path | None = None, wanted=SPLIT_NAMES) -> Splits:
        """The split this run trained on: its splits.csv over its data folder; with `data_dir`
        (or for a run older than splits.csv) made again from that folder with the run's split
        settings. `wanted` names the split folders needed (see `build_splits`)."""
        data = self.config.get("data", {})
        folder = data_dir or data.get("data_dir")
        if not folder:
            raise UserError(f"Run {self.path} names no data folder; pass data.data_dir=...")
        recorded = self.path / SPLITS_FILE
        if data_dir is None and recorded.is_file():
            return build_splits(folder, splits_file=recorded)
        settings = {f.name: data[f.name] for f in fields(SplitSettings) if f.name in data}
        return build_splits(folder, SplitSettings(**settings), wanted=wanted)

    def metrics(self) -> dict[str, dict[int, float]]:
        """Per-epoch metrics from csv/metrics.csv: {"val/acc": {epoch: value}, ...}."""
        return read_metrics(self.path / "csv" / "metrics.csv")


def read_metrics(path: Path) -> dict[str, dict[int, float]]:
    """Each key's value per epoch, from Lightning's CSVLogger file.

    The logger writes one row per logging call, joined by the `epoch` column; the learning-rate
    rows (logged as an epoch starts) leave it empty: they belong to the next row that has one.
    """
    if not Path(path).is_file():
        raise UserError(
            f"No metrics file {path}: the run was trained without the csv logger (logger=none)."
        )
    metrics: dict[str, dict[int, float]] = {}
    waiting: list[dict] = []  # rows without an epoch, and the row that gives it
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    last = max((int(float(row["epoch"])) for row in rows if row.get("epoch")), default=-1)
    for row in [*rows, {"epoch": str(last + 1)}]:  # and an epoch that logged nothing else yet
        waiting.append(row)
        if row.get("epoch"):
            for waited in waiting:
                for key, value in waited.items():
                    if key not in ("epoch", "step") and value not in ("", None):
                        metrics.setdefault(key, {})[int(float(row["epoch"]))] = float(value)
            waiting.clear()
    return metrics


def read_yaml(path: Path):
    """A YAML file as plain dicts and lists, or None when there is no such file."""
    return OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else None


def run_for_checkpoint(ckpt_path: Path) -> Run | None:
    """The run a checkpoint was saved in (`<run>/checkpoints/x.ckpt`), if it is still there."""
    candidate = Path(ckpt_path).expanduser().resolve().parent.parent
    return Run(candidate) if (candidate / "config.yaml").is_file() else None


def override_key(override: str) -> str:
    """`seed` of the command-line override `seed=3`, `+seed=3`, `++seed=3` or `~seed`."""
    return override.split("=", 1)[0].lstrip("+~")


def multirun_dir(hydra_cfg) -> Path:
    """The multirun's directory, from Hydra's config (`HydraConfig.get()` or a callback's
    `config.hydra`): a relative hydra.sweep.dir is relative to where Hydra was started."""
    return Path(hydra_cfg.runtime.cwd) / hydra_cfg.sweep.dir


def sweep_runs(sweep_dir: str | Path) -> list[Run]:
    """Every job of a multirun, in job order (0, 1, ..., 10): each directory below
    `sweep_dir` in which Hydra recorded a job's overrides, finished or not."""
    root = Path(sweep_dir).expanduser()
    jobs = [p.parent.parent for p in root.rglob(".hydra/overrides.yaml")] if root.is_dir() else []
    jobs.sort(key=lambda p: job_key(p.relative_to(root)))
    return [Run(job, check=False) for job in jobs]


def job_key(job: Path) -> list[int]:
    """Sort key of a job folder relative to its sweep, so that 10 sorts after 9."""
    return [int(part) if part.isdigit() else -1 for part in job.parts]


def checkpoint_preprocessing(
    hparams: dict, run: Run | None, image_size=None, resize_size=None
) -> Preprocessing:
    """How the checkpoint's run prepared its images (saved in the checkpoint), with the sizes
    given on top; for a checkpoint of an older version of the template, its run's."""
    saved = hparams.get("preprocessing") or (run.preprocessing.as_dict() if run else None)
    return Preprocessing.resolve(saved, image_size=image_size, resize_size=resize_size)


def draft_size(run: Run | None, pre: Preprocessing, jpeg_draft: bool | None = None):
    """The `draft_size` for `load_rgb` that reads images as the run did: `pre.resize_size` when
    `jpeg_draft` (None: the run's data.jpeg_draft, false without a run) is true."""
    if jpeg_draft is None:
        jpeg_draft = bool(run.config.get("data", {}).get("jpeg_draft")) if run else False
    return pre.resize_size if jpeg_draft else None
