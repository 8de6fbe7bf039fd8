"""The one exception type for mistakes a user can fix (bad paths, bad config values), and
how the command-line entry points report it: one clear message and exit code 2."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Something in the user's data or configuration is wrong; the message says how to fix it."""


@contextmanager
def exit_on_user_error(log: logging.Logger, enabled: bool = True) -> Iterator[None]:
    """Within the block, a `UserError` is logged as one message and exits with code 2.

    Also when it was raised inside a constructor that `hydra.utils.instantiate` called:
    Hydra wraps those in an InstantiationException. With `enabled=False` (a multirun job)
    it propagates, so that the launcher records the job as failed.
    """
    try:
        yield
    except Exception as err:
        cause = find_cause(err, UserError)
        if cause is None or not enabled:
            raise
        log.error("%s", cause)
        raise SystemExit(2) from None


def find_cause(err: BaseException | None, kind: type) -> BaseException | None:
    """`err` or the exception it was raised from (following `__cause__`), if of `kind`."""
    while err is not None:
        if isinstance(err, kind):
            return err
        err = err.__cause__
    return None
