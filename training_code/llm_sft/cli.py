"""Command-line entry point: the SageMaker training contract around `training.run_job`.

Exit codes: 0 success, 1 a user error (data, model, configuration) or an unexpected error,
2 invalid hyperparameters. On failure a one-paragraph reason goes to `<output_dir>/failure`,
which SageMaker reports as the job's FailureReason; the traceback, if any, goes to the log only.

Under torchrun every process runs `main`. Rank 0 logs at INFO, the others only warnings and
errors (each line tagged with its rank). A failing process writes the failure file unless one
is already there, except rank 0, whose reason wins: bad data fails every process with the same
message, and the instance ends up with one failure file whichever process got there first.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from llm_sft.distributed import DistContext
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
from llm_sft.paths import PATH_OPTIONS, failure_dir, require_torchrun_for_hosts, resolve_paths

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


def configure_logging(ctx: DistContext | None = None) -> None:
    ctx = ctx or DistContext.from_env()
    logger.setLevel(logging.INFO if ctx.is_main else logging.WARNING)
    if any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        return
    handler = _StdoutHandler(sys.stdout)
    tag = f" [rank {ctx.rank}]" if ctx.launched and ctx.world_size > 1 else ""
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s"))
    logger.addHandler(handler)


def _report_failure(directory: Path, reason: str, ctx: DistContext) -> None:
    """Rank 0 always writes; another process only where no failure file exists yet."""
    if ctx.is_main or not (directory / "failure").exists():
        write_failure(directory, reason)


def _describe(error: UserError) -> str:
    for kind, label in _KIND.items():
        if isinstance(error, kind):
            return f"{label}: {error}"
    return str(error)


def main(argv: Sequence[str] | None = None) -> int:
    environ = os.environ
    ctx = DistContext.from_env(environ)
    configure_logging(ctx)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args, environ, ctx)
    finally:
        from llm_sft.distributed import shutdown

        if "torch" in sys.modules:
            shutdown()


def _main(args: list[str], environ: Mapping[str, str], ctx: DistContext) -> int:
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
        _report_failure(failure_dir(options, environ), f"Invalid hyperparameters: {error}", ctx)
        return 2
    paths = resolve_paths(options, environ, hp.checkpoint_dir)
    logger.info("paths: %s", paths)
    try:
        require_torchrun_for_hosts(environ, ctx.launched)
        from llm_sft.training import run_job

        run_job(hp, paths, ctx)
    except UserError as error:
        logger.error("%s", _describe(error))
        _report_failure(paths.output_dir, _describe(error), ctx)
        return error.exit_code
    except SimulatedInterruptionError as error:
        logger.error("%s", error)
        _report_failure(paths.output_dir, f"Interrupted: {error}", ctx)
        return 1
    except Exception as error:
        logger.exception("training failed")
        reason = f"Unexpected error: {type(error).__name__}: {error}"
        _report_failure(paths.output_dir, reason, ctx)
        return 1
    return 0
