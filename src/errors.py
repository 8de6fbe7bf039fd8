"""The one exception type for mistakes a user can fix (bad paths, bad config values, a missing
extra), and how the command-line entry points report it: one clear message and exit code 2."""

import importlib.util
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# What the extras of pyproject.toml bring beyond the core install, by the module a feature
# imports: `pip install -e ".[<extra>]"` (`make install` installs them all).
EXTRAS = {
    "hydra_plugins.hydra_submitit_launcher": "slurm",
    "submitit": "slurm",
    "hydra_plugins.hydra_optuna_sweeper": "sweeps",
    "hydra_plugins.hydra_joblib_launcher": "sweeps",
    "optuna": "sweeps",
    "mlflow": "mlflow",
    "wandb": "wandb",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "export",
    "pytorch_grad_cam": "cam",
}
# Command-line choices that need a Hydra plugin of an extra: without it, Hydra cannot even
# compose the config (and would only say that the option does not exist).
PLUGIN_CHOICES = {
    "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=joblib": "hydra_plugins.hydra_joblib_launcher",
    "hparams_search=": "hydra_plugins.hydra_optuna_sweeper",
}


# Config keys that moved: the old name on a command line gets the new one (with what was
# inside it, unless the key moved inside itself: figures=false is figures.enabled=false).
RENAMED = {
    "model.optimizer": "optimizer",
    "model.scheduler": "scheduler",
    "figures": "figures.enabled",
}


class UserError(Exception):
    """Something in the user's data or configuration is wrong; the message says how to fix it."""


def missing_extra(module: str, what: str) -> UserError:
    """The error for `what` (a config choice or a command), which needs `module` of an extra."""
    extra = EXTRAS[module]
    return UserError(
        f"{what} needs {module.removeprefix('hydra_plugins.')}, which comes with the extra "
        f'[{extra}]: pip install -e ".[{extra}]" (or make install, which installs every extra).'
    )


def require_extra(module: str, what: str) -> None:
    """Stop with `missing_extra` when `module` is not installed."""
    if importlib.util.find_spec(module.split(".")[0]) is None or (
        "." in module and importlib.util.find_spec(module) is None
    ):
        raise missing_extra(module, what)


def check_command_line(args: list[str]) -> None:
    """Stop with the fix before Hydra composes anything: a renamed key gets its new name, a
    choice that needs an uninstalled Hydra plugin the pip command of its extra."""
    for arg in args:
        key = arg.lstrip("+~").split("=", 1)[0]
        for old, new in RENAMED.items():
            inside = key.startswith(old + ".") and not new.startswith(old + ".")
            if key == old or inside:
                raise UserError(f"{old} is now {new}: write {new + key[len(old) :]} (was {arg}).")
        for choice, module in PLUGIN_CHOICES.items():
            if arg.lstrip("+").startswith(choice):
                require_extra(module, arg)


def run_command_line(main, args: list[str] | None = None) -> None:
    """Run a Hydra `main` after `check_command_line` and with `resume=DIR` expanded
    (`src.runs.resume`); a problem found there exits with code 2 and its message."""
    from src.runs.resume import resume_overrides

    try:
        sys.argv[1:] = resume_overrides(sys.argv[1:] if args is None else args)
        check_command_line(sys.argv[1:])
    except UserError as err:
        print(f"Error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    main()


@contextmanager
def exit_on_user_error(log: logging.Logger, enabled: bool = True) -> Iterator[None]:
    """Within the block, a `UserError` is logged as one message and exits with code 2; so is
    the import of a module that only an uninstalled extra brings.

    Also when it was raised inside a constructor that `hydra.utils.instantiate` called:
    Hydra wraps those in an InstantiationException. With `enabled=False` (a multirun job)
    it propagates, so that the launcher records the job as failed.
    """
    try:
        yield
    except Exception as err:
        cause = find_cause(err, UserError)
        missing = None if cause else find_cause(err, ModuleNotFoundError)
        if missing is not None and missing.name in EXTRAS:
            cause = missing_extra(missing.name, "This command")
        if cause is None or not enabled:
            raise
        log.error("%s", cause)
        raise SystemExit(2) from None


def find_cause(err: BaseException | None, kind: type) -> BaseException | None:
    """`err` or the exception it was raised from (following `__cause__`), if of `kind`."""
    seen = set()
    while err is not None and id(err) not in seen:  # (`raise err from err` makes a loop)
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None
