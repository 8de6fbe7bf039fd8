"""The one exception type for mistakes a user can fix (bad paths, bad config values).

`src.train` prints these as a single clear message instead of a traceback.
"""


class UserError(Exception):
    """Something in the user's data or configuration is wrong; the message says how to fix it."""
