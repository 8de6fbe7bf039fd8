"""Train a transfer-learning model: `python -m src.train [group=option] [key=value ...]`.

Builds the datamodule, model, callbacks, loggers and Trainer from the config (each from its
`_target_`), fits, validates the best checkpoint again and tests it when the data has a test
split, then writes `summary.json` and the figures into the run directory.
"""

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.errors import exit_on_user_error, run_command_line

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns `optimized_metric`'s value (what a search optimises)."""
    from src.runs.resume import stop_interrupted

    # In a multirun, errors propagate: the launcher marks the job failed and carries on.
    with exit_on_user_error(log, enabled=HydraConfig.get().mode != RunMode.MULTIRUN):
        summary = train(cfg)
    if summary.interrupted:
        stop_interrupted(summary, cfg.paths.output_dir)  # says how to continue, then exits
    return summary.optimized_value


def train(cfg: DictConfig):
    """Fit the model `cfg` describes and return its `RunSummary` (also in summary.json)."""
    import time

    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.utilities import rank_zero_only

    from src.inspection.predictions import KeepValidationOutputs
    from src.runs.resume import continue_from, finished_run, resolve_ckpt_path
    from src.runs.summary import RunSummary
    from src.training.config_checks import check_config
    from src.training.fit import best_checkpoint_results, fit, test_best_checkpoint
    from src.training.precision import resolve_precision
    from src.training.trackers import log_config, log_run_end

    # `lightning` adds a console handler of its own; Hydra's already prints (and writes train.log).
    logging.getLogger("lightning").handlers.clear()
    check_config(cfg)
    started, output_dir = time.perf_counter(), Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    if ckpt_path is not None and (done := finished_run(output_dir, cfg)):
        return done  # continued a run that had finished: nothing left to train
    L.seed_everything(cfg.seed, workers=True)

    splits_file = output_dir / "splits.csv"  # a run continued in place keeps its split
    datamodule, model = data_and_model(cfg, splits_file if ckpt_path else None)
    if rank_zero_only.rank == 0:  # under DDP, every process runs this
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        datamodule.splits.write(splits_file)
    # The strategy's callbacks come first: a stage it opens at the start of an epoch is then
    # in the learning rates logged for that epoch.
    callbacks = [instantiate(c) for c in (cfg.strategy.get("callbacks") or {}).values()]
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    validation_outputs = KeepValidationOutputs()  # the figures reuse the final validation
    callbacks = [c for c in [*callbacks, validation_outputs] if c is not None]
    loggers = [instantiate(logger) for logger in (cfg.get("logger") or {}).values()]
    if ckpt_path is not None:  # checked against this model; the loggers keep its epochs
        continue_from(ckpt_path, model, loggers)
    log_config(loggers, cfg)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, precision=precision)
    if not any(getattr(c, "save_last", False) for c in trainer.checkpoint_callbacks):
        log.warning("No last.ckpt (callbacks=none?): if interrupted, this run cannot continue.")

    fit_time_s, interrupted_by = fit(trainer, model, datamodule, ckpt_path)
    optimized = trainer.callback_metrics.get(cfg.optimized_metric)
    results = best_checkpoint_results(trainer, model, datamodule, not interrupted_by, cfg.monitor)
    if datamodule.test_set is not None and not interrupted_by:
        results.update(test_best_checkpoint(trainer, model, datamodule, results.get("best_ckpt")))
    summary = RunSummary(
        strategy=cfg.strategy.name,
        seed=cfg.seed,
        **RunSummary.facts(datamodule, trainer),
        interrupted=interrupted_by is not None,
        interrupted_by=interrupted_by,
        resumed_from=str(ckpt_path) if ckpt_path else None,
        fit_time_s=round(fit_time_s, 2),
        optimized_metric=cfg.optimized_metric,
        optimized_value=None if optimized is None else float(optimized),
        monitor=cfg.monitor,
        monitor_mode=cfg.monitor_mode,
        **results,
    )
    summary.wall_time_s = round(time.perf_counter() - started, 2)
    if trainer.is_global_zero:
        summary.write(output_dir)
        if cfg.figures.enabled:
            from src.inspection.run_figures import write_run_figures

            validation = validation_outputs.predictions(datamodule.val_set, datamodule.class_names)
            write_run_figures(output_dir, validation=validation, train_set=datamodule.train_set,
                              cam=cfg.figures.cam)  # fmt: skip
        log_run_end(trainer.loggers, output_dir, summary, cfg, trainer.global_step)
        log.info(summary.result_line(output_dir))
    summary.check_optimized(trainer.callback_metrics)
    return summary


def data_and_model(cfg: DictConfig, splits_file: Path | None = None):
    """The datamodule of `cfg`, set up for fitting (its split from `splits_file` when that
    exists), and the model sized for its classes, with the loss weights of
    `model.class_weights` from the training counts (also what `src.lr_find` trains)."""
    from hydra.utils import instantiate

    from src.models.backbone import weights_preprocessing

    # Images are prepared as the backbone's weights expect (data.* keys override).
    weights = weights_preprocessing(cfg.model.backbone, cfg.model.weights)
    given = {"splits_file": str(splits_file)} if splits_file and splits_file.is_file() else {}
    datamodule = instantiate(cfg.data, augment=cfg.augment, preprocessing=weights, **given)
    datamodule.prepare_data()
    datamodule.setup("fit")
    names = datamodule.class_names
    model = instantiate(
        cfg.model,
        num_classes=len(names),
        class_names=names,
        class_weights=datamodule.loss_weights(cfg.model.class_weights),
        **{part: cfg[part] for part in ("head", "loss", "optimizer", "scheduler", "metrics")},
        monitor=cfg.monitor,
        monitor_mode=cfg.monitor_mode,
        preprocessing=datamodule.preprocessing.as_dict(),
        _recursive_=False,  # the model builds its parts from their configs
    )
    return datamodule, model


if __name__ == "__main__":
    import gc

    run_command_line(main)
    gc.freeze()  # skip the last collection at exit (about 1 s): everything is written
