"""The one exception type that reaches a user: a message that names the value and the fix."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment; the CLI prints `error: <message>` on one line and exits non-zero.

    Library code raises it at boundaries (files, flags, model files); anything
    else escaping is a bug.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
