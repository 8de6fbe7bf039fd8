"""Make Lightning's DDP start the other processes of a sweep job as that job, not as the sweep.

Lightning's DDP launcher starts ranks 1..n-1 by re-running this process's command line
(`sys.argv`) with `hydra.run.dir=<HydraConfig run.dir>` appended. In a single run that is
the run's own directory. Inside a multirun, though, `sys.argv` holds `-m` and the whole
sweep (`lr=0.01,0.001`), and `run.dir` is not the job's directory: every job would start
another full sweep in a new directory. While a job runs, `this_job_on_the_command_line`
makes the command line that job's own overrides and `run.dir` its directory.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.hydra_config import HydraConfig
from omegaconf import read_write


@contextmanager
def this_job_on_the_command_line(extra: list[str] = ()) -> Iterator[None]:
    """Within the block, `sys.argv` and Hydra's `run.dir` describe the current sweep job only
    (its overrides, then `extra`)."""
    hydra_cfg = HydraConfig.get()
    saved_argv, saved_run_dir = sys.argv, hydra_cfg.run.dir
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task, *extra]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(hydra_cfg.run):
            hydra_cfg.run.dir = saved_run_dir
