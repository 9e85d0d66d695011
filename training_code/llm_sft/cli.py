"""Command-line entry point: the SageMaker training contract around `training.run_job`.

Exit codes: 0 success, 1 a user error (data, model, configuration) or an unexpected error,
2 invalid hyperparameters. On failure a one-paragraph reason goes to `<output_dir>/failure`,
which SageMaker reports as the job's FailureReason; the traceback, if any, goes to the log only.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from llm_sft.errors import (
    ConfigurationError,
    DataError,
    ModelLoadError,
    SimulatedInterruptionError,
    UserError,
)
from llm_sft.hyperparameters import (
    HyperparameterError,
    hyperparameters_from_sm_hps,
    parse_hyperparameters,
    split_cli_args,
)
from llm_sft.output import write_failure
from llm_sft.paths import PATH_OPTIONS, failure_dir, require_single_host, resolve_paths

logger = logging.getLogger("llm_sft")

_KIND = {
    DataError: "Data error",
    ModelLoadError: "Model error",
    ConfigurationError: "Configuration error",
}


class _StdoutHandler(logging.StreamHandler):
    """Writes to the current `sys.stdout` (which test harnesses swap), alongside METRIC lines."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def configure_logging() -> None:
    if any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        return
    handler = _StdoutHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _describe(error: UserError) -> str:
    for kind, label in _KIND.items():
        if isinstance(error, kind):
            return f"{label}: {error}"
    return str(error)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ
    options: dict[str, str] = {}
    try:
        raw: dict[str, object] = dict(hyperparameters_from_sm_hps(environ.get("SM_HPS")))
        raw.update(split_cli_args(args))
        for name in PATH_OPTIONS:
            if name in raw:
                options[name] = str(raw.pop(name))
        hp = parse_hyperparameters(raw)
    except HyperparameterError as error:
        logger.error("invalid hyperparameters: %s", error)
        write_failure(failure_dir(options, environ), f"Invalid hyperparameters: {error}")
        return 2
    paths = resolve_paths(options, environ, hp.checkpoint_dir)
    logger.info("paths: %s", paths)
    try:
        require_single_host(environ)
        from llm_sft.training import run_job

        run_job(hp, paths)
    except UserError as error:
        logger.error("%s", _describe(error))
        write_failure(paths.output_dir, _describe(error))
        return error.exit_code
    except SimulatedInterruptionError as error:
        logger.error("%s", error)
        write_failure(paths.output_dir, f"Interrupted: {error}")
        return 1
    except Exception as error:
        logger.exception("training failed")
        write_failure(paths.output_dir, f"Unexpected error: {type(error).__name__}: {error}")
        return 1
    return 0
