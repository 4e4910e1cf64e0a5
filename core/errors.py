"""User errors: what went wrong and how to fix it, printed as one line.

Every error a user can cause (configuration, data, model path, disk, plugins) derives
from :class:`UserError`. The command line prints it as::

    alignkit: <what went wrong>; <how to fix it>

exits with code 2 and shows no traceback (``--debug`` or ``ALIGNKIT_DEBUG=1`` shows it).
Anything else is a bug in alignkit or a plugin and keeps its traceback.
"""
from __future__ import annotations

import os

__all__ = ["UserError", "NonFiniteError", "DiskFullError", "RunFolderError", "format_user_error", "debug_enabled"]


class UserError(Exception):
    """An error the user can fix. ``str(err)`` is ``"<what>; <fix>"`` when a fix is given."""

    def __init__(self, what: str, fix: str = ""):
        self.what, self.fix = what, fix
        super().__init__(f"{what}; {fix}" if fix else what)


class NonFiniteError(UserError, FloatingPointError):
    """A non-finite loss, gradient norm or weight: the run stops before it is applied or saved."""


class DiskFullError(UserError, OSError):
    """Writing a checkpoint or the final model ran out of disk space."""


class RunFolderError(UserError):
    """The run folder cannot be used (it already holds a run, or a checkpoint to resume is missing)."""


def format_user_error(exc: BaseException) -> str:
    """The one line printed for a user error (newlines folded)."""
    text = " ".join(str(exc).split())
    return f"alignkit: {text}"


def debug_enabled() -> bool:
    return os.environ.get("ALIGNKIT_DEBUG", "") not in ("", "0")
