"""Errors the CLI reports as one line (plus a hint), never as a traceback."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "CliError"]

#: A run or an operation failed.
EXIT_FAILED = 1
#: The input is wrong (bad run file, unknown run, bad option): nothing was started.
EXIT_USAGE = 2


class CliError(Exception):
    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
