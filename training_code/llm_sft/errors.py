"""Errors that are the user's to fix: they end the job with a one-paragraph FailureReason.

Anything else is a bug or an infrastructure fault and is reported as "unexpected error".
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix (data, model reference, unsupported configuration)."""

    exit_code = 1


class DataError(UserError):
    """A dataset file is unusable; the message names the file and, where known, the line."""


class ModelLoadError(UserError):
    """The base model or tokenizer cannot be found or loaded."""


class ConfigurationError(UserError):
    """The requested configuration cannot run here (e.g. QLoRA without CUDA)."""


class SimulatedInterruptionError(RuntimeError):
    """Raised by the fault-injection hook that emulates a spot interruption (tests only)."""
