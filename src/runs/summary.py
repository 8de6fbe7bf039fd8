"""The result of one training run, as `summary.json` holds it: `src.train` writes it, and
everything that reads a run reads it back through `RunSummary.read`."""

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from src.errors import UserError
from src.files import write_text_atomic

FILE_NAME = "summary.json"


@dataclass
class RunSummary:
    """What a run trained on, how it ended and its best checkpoint. Epochs are 0-based, like
    metrics.csv's; checkpoint paths are as the run saw them (see `best_ckpt_path`)."""

    strategy: str | None = None
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None  # None: the dataset has no test split
    epochs_trained: int | None = None
    precision: str | None = None
    accelerator: str | None = None
    seed: int | None = None
    preprocessing: dict = field(default_factory=dict)  # src.data.transforms.Preprocessing
    interrupted: bool = False
    stopped_early: bool = False  # ended before trainer.max_epochs by itself (early stopping)
    interrupted_by: str | None = None  # "SIGINT" or "SIGTERM"
    resumed_from: str | None = None
    skipped_images: list[str] = field(default_factory=list)
    fit_time_s: float | None = None
    best_val_acc: float | None = None  # the run's best val/acc, whatever `monitor` is
    best_epoch: int | None = None
    best_ckpt: str | None = None
    last_ckpt: str | None = None
    # The best checkpoint validated again after training, every metric (not when interrupted).
    best_ckpt_val_acc: float | None = None
    best_ckpt_val_loss: float | None = None
    best_ckpt_val_metrics: dict[str, float] = field(default_factory=dict)
    # The metric that picks the best checkpoint, and its best value.
    monitor: str | None = None
    monitor_mode: str | None = None
    monitor_best: float | None = None
    # The best checkpoint on the test split, when there is one: the number to report.
    test_acc: float | None = None
    test_loss: float | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    # The value a sweep optimises: the logged metric named by `optimized_metric`.
    optimized_metric: str | None = None
    optimized_value: float | None = None
    wall_time_s: float | None = None

    @staticmethod
    def facts(datamodule, trainer) -> dict:
        """The fields that describe the data and the Trainer of a finished fit."""
        test_set, epoch = datamodule.test_set, trainer.current_epoch
        stopped = trainer.should_stop and not trainer.interrupted and epoch < trainer.max_epochs
        return {
            "class_names": datamodule.class_names,
            "num_classes": len(datamodule.class_names),
            "train_size": len(datamodule.train_set),
            "val_size": len(datamodule.val_set),
            "test_size": None if test_set is None else len(test_set),
            "preprocessing": datamodule.preprocessing.as_dict(),
            "skipped_images": datamodule.skipped_images,
            "epochs_trained": epoch,
            "stopped_early": stopped,
            "precision": str(trainer.precision),
            "accelerator": type(trainer.accelerator).__name__,
        }

    def check_optimized(self, logged) -> None:
        """Stop when a finished run's `optimized_metric` names no metric in `logged`: a
        sweep would have nothing to optimise."""
        if self.optimized_value is None and not self.interrupted:
            raise UserError(
                f"optimized_metric={self.optimized_metric} was never logged, so a sweep has "
                f"nothing to optimise (summary.json is written). Choose one of the logged "
                f"metrics: {', '.join(sorted(logged))}."
            )

    def write(self, run_dir: str | Path) -> None:
        write_text_atomic(Path(run_dir) / FILE_NAME, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, run_dir: str | Path) -> "RunSummary | None":
        """The run's summary; None when the run has not finished (or crashed). Unknown keys are
        ignored and missing ones keep their defaults (summaries of other template versions)."""
        data = read_json(Path(run_dir) / FILE_NAME)
        known = {f.name for f in fields(cls)}
        return None if data is None else cls(**{k: v for k, v in data.items() if k in known})

    def best_ckpt_path(self, run_dir: str | Path) -> Path | None:
        """The best checkpoint's file inside `run_dir/checkpoints` (where the run wrote it)."""
        return Path(run_dir) / "checkpoints" / Path(self.best_ckpt).name if self.best_ckpt else None

    def result_line(self, run_dir: str | Path) -> str:
        """The console's last line: strategy, the monitored metric's best value and where it came
        from, and that checkpoint's test accuracy when there is a test split."""
        monitor = self.monitor or "val/acc"
        best = self.best_val_acc if monitor == "val/acc" else self.monitor_best
        value = "n/a" if best is None else f"{best:.4f}"
        where = "" if self.best_epoch is None else f" at epoch {self.best_epoch}"
        if monitor != "val/acc" and self.best_ckpt_val_acc is not None:
            where += f" (val/acc {self.best_ckpt_val_acc:.4f})"
        test = "" if self.test_acc is None else f", test/acc {self.test_acc:.4f}"
        test_monitor = "test/" + monitor.removeprefix("val/")  # e.g. test/f1_macro
        if monitor != "val/acc" and test_monitor in self.test_metrics:
            test += f", {test_monitor} {self.test_metrics[test_monitor]:.4f}"
        return (
            f"Result: {self.strategy} best {monitor} {value}{where}{test} ({self.epochs_trained} "
            f"epochs, {self.fit_time_s or 0.0:.1f} s); run directory {run_dir}"
        )


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
