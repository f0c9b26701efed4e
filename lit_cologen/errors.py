"""The one base class of the errors a user can fix (a config key, a file, a dataset layout, missing weights).

``cologen`` prints such an error as one line naming the problem and exits with status 2 (``--debug`` shows the
traceback); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error in what the user gave (config, paths, data, weights); the message says what to do."""


__all__ = ["UserError"]
