"""Lambda without Docker: ``Invoke`` runs the function's handler in this process, with the
function's environment and execution role, and reports an exception as Lambda does."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from finetune.local.patching import Patch

if TYPE_CHECKING:
    from finetune.local.moto_patches import Principals

__all__ = ["FUNCTION_LOGS", "FakeLambdaContext", "lambda_patches", "no_principals"]


class FakeLambdaContext:
    """The parts of the Lambda context object the handlers (and Powertools) read."""

    def __init__(self, function_name: str, function_arn: str, memory_mb: int, timeout_s: int):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function_arn
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


_ENVIRONMENT_LOCK = threading.RLock()


class _FunctionLogStream(io.TextIOBase):
    """Where in-process functions print, like Lambda's log stream. Loggers created while a
    function's module is first imported (Powertools binds sys.stdout then) keep writing here;
    ``sink`` decides where that goes (the local backend: a log file)."""

    sink: Callable[[str], object] | None = None

    def write(self, text: str) -> int:
        if self.sink is not None:
            self.sink(text)
        else:
            sys.__stdout__.write(text) if sys.__stdout__ else None
        return len(text)

    def writable(self) -> bool:
        return True


FUNCTION_LOGS = _FunctionLogStream()


@contextlib.contextmanager
def _function_environment(variables: dict[str, str]) -> Iterator[None]:
    """The function's environment for the duration of one in-process invocation."""
    with _ENVIRONMENT_LOCK:
        saved = dict(os.environ)
        os.environ.update(variables)
        os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)


def no_principals(_: str | None) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def _invoke_in_process(
    backend: Any,
    function_name: str,
    qualifier: Any,
    body: Any,
    response_headers: dict[str, str],
    acting_as: Callable[[str | None], contextlib.AbstractContextManager[None]],
) -> bytes:
    function = backend.get_function(function_name, qualifier)
    event = json.loads(body) if body else {}
    module_name, _, attribute = function.handler.rpartition(".")
    context = FakeLambdaContext(
        function.function_name,
        function.function_arn,
        int(function.memory_size or 128),
        int(function.timeout or 3),
    )
    region = function.function_arn.split(":")[3]
    runtime_environment = {
        # What the Lambda runtime sets for every function.
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_NAME": function.function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
    }
    with (
        _function_environment({**runtime_environment, **dict(function.environment_vars or {})}),
        contextlib.redirect_stdout(FUNCTION_LOGS),
        contextlib.redirect_stderr(FUNCTION_LOGS),
        acting_as(function.role),
    ):
        try:
            handler = getattr(importlib.import_module(module_name), attribute)
            result = handler(event, context)
        except Exception as error:  # reported to the caller exactly as Lambda does
            response_headers["x-amz-function-error"] = "Unhandled"
            payload = {
                "errorMessage": str(error),
                "errorType": type(error).__name__,
                "stackTrace": traceback.format_exception(error)[-5:],
            }
            return json.dumps(payload).encode()
    return json.dumps(result, default=str).encode()


def lambda_patches(principals: Principals | None) -> list[Patch]:
    from moto.awslambda_simple.models import LambdaSimpleBackend

    acting_as = principals.acting_as if principals is not None else no_principals

    def invoke(
        self: Any,
        function_name: str,
        qualifier: Any,
        body: Any,
        headers: Any,
        response_headers: Any,
    ) -> bytes:
        return _invoke_in_process(self, function_name, qualifier, body, response_headers, acting_as)

    return [
        Patch(
            LambdaSimpleBackend,
            "invoke",
            invoke,
            "Invoke runs the function's handler with its environment and execution role; an "
            "exception becomes a function error (errorType, errorMessage)",
        )
    ]
