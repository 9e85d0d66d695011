"""Step Functions rules that moto's interpreter relaxes, enforced as AWS documents them.

moto's ASL interpreter (a port of LocalStack's) is lenient where AWS is not, and every leniency
hides a workflow bug that would end a real execution in an error nobody handles:

- A Choice rule whose ``Variable`` path is missing from the state input: moto evaluates the rule
  as false; AWS fails the execution with ``States.Runtime`` (only ``IsPresent`` may test a path
  that may be missing - the Choice state documentation guards optional fields with it).
- ``States.Runtime`` is caught by ``States.ALL`` in moto. AWS: "A States.Runtime error isn't
  retriable, and will always cause the execution to fail. A retry or catch on States.ALL won't
  catch States.Runtime errors." (Step Functions developer guide, error names). The same page:
  States.ALL "can't catch the States.DataLimitExceeded terminal error" (the 256 KiB payload
  limit); only an ErrorEquals naming it does.
- SageMaker error names. AWS names errors of the optimised SageMaker integrations
  (``arn:aws:states:::sagemaker:*``) after the AWS SDK for Java v1 exception:
  ``SageMaker.AmazonSageMakerException`` for every unmodeled error (validation, throttling,
  not found), ``SageMaker.<ModeledName>`` for the API's modeled errors (e.g.
  ``SageMaker.ResourceLimitExceededException``), with a cause of the form ``<message> (Service:
  AmazonSageMaker; Status Code: 400; Error Code: <code>; Request ID: <id>; Proxy: null)``; moto
  reports them as ``States.Runtime`` - caught by anything. AWS SDK integrations
  (``arn:aws:states:::aws-sdk:sagemaker:*``) use ``<ServiceName>.<ErrorName>`` in PascalCase with
  an ``Exception`` suffix (developer guide, "AWS SDK service integrations"), so the service part
  is ``SageMaker``; moto writes ``sagemaker``.
- AWS SDK integrations return JSON: timestamps arrive as ISO-8601 strings. moto hands the state
  the SDK's ``datetime`` objects, which then break the execution's serialization.
- Retry intervals: the twin keeps every retry, its count and its order, but sleeps
  ``retry_time_scale`` times the interval (0 in tests): the interval is AWS's business, the
  behaviour is ours.

Missing paths in ``Parameters``, ``ResultSelector``, ``InputPath`` and ``OutputPath``, bad
intrinsic arguments and the 256 KiB payload limit (``States.DataLimitExceeded``) already raise
in moto as on AWS; with the rules above they now escape the Catches AWS says they escape.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from finetune.local.patching import Patch

__all__ = [
    "SAGEMAKER_MODELED_ERRORS",
    "sagemaker_task_failure",
    "strict_asl_patches",
    "transient_error",
]

#: Errors the SageMaker API models (botocore's service model lists them per operation); every
#: other error code reaches Step Functions as the SDK's generic service exception.
SAGEMAKER_MODELED_ERRORS = (
    "ConflictException",
    "ResourceInUse",
    "ResourceLimitExceeded",
    "ResourceNotFound",
)


def transient_error(resource: str) -> str:
    """The error name a Task with ``resource`` reports when its service throttles or fails
    internally - what a Retry must name to survive a busy account."""
    if ":states:::aws-sdk:" in resource:
        # ThrottlingException and InternalFailure are unmodeled: <Service>.<Service>Exception.
        service = resource.split(":states:::aws-sdk:", 1)[1].split(":", 1)[0]
        name = {"sagemaker": "SageMaker", "sns": "Sns", "s3": "S3"}.get(service, service.title())
        return f"{name}.{name}Exception"
    if ":states:::sagemaker:" in resource:
        return "SageMaker.AmazonSageMakerException"
    if ":states:::sns:" in resource:
        return "SNS.ThrottledException"
    if ":lambda:" in resource:  # Invoke throttled at the function's concurrency
        return "Lambda.TooManyRequestsException"
    raise ValueError(f"no transient error known for {resource}")


def strict_asl_patches(*, retry_time_scale: float = 0.0) -> list[Patch]:
    from moto.stepfunctions.parser.asl.component.common.error_name.error_equals_decl import (
        ErrorEqualsDecl,
    )
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.state.choice.comparison.comparison_variable import (  # noqa: E501
        ComparisonVariable,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk as aws_sdk,
    )

    original_error_equals = ErrorEqualsDecl._eval_body

    def error_equals(self: Any, env: Any) -> None:
        error_name = env.stack[-1]
        original_error_equals(self, env)
        data_limit = "States.DataLimitExceeded"
        named = any(getattr(name, "error_name", None) == data_limit for name in self.error_names)
        over_limit = getattr(error_name, "error_name", None) == data_limit
        if _is_states_runtime(error_name) or (over_limit and not named):
            env.stack[-1] = False

    def comparison(self: Any, env: Any) -> None:
        from moto.stepfunctions.parser.asl.component.state.choice.comparison.comparison_operator_type import (  # noqa: E501
            ComparisonOperatorType,
        )
        from moto.stepfunctions.parser.asl.component.state.choice.comparison.variable import (
            NoSuchVariable,
        )

        self.variable.eval(env)
        value = env.stack[-1]
        operator = self.comparison_function.operator_type
        if isinstance(value, NoSuchVariable) and operator != ComparisonOperatorType.IsPresent:
            path = self.variable.string_sampler.literal_value
            raise _runtime_failure(
                env,
                f"Invalid path '{path}': The choice state's condition path references an "
                "invalid value.",
            )
        self.comparison_function.eval(env)

    def normalise_response(self: Any, response: Any, *args: Any, **kwargs: Any) -> None:
        _timestamps_as_strings(response)

    class _ScaledClock:
        """``time`` for the retrier: real time, scaled sleeps."""

        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            time.sleep(seconds * retry_time_scale)

    return [
        Patch(
            ErrorEqualsDecl,
            "_eval_body",
            error_equals,
            "States.Runtime is neither retried nor caught, not even by States.ALL; "
            "States.DataLimitExceeded is caught only by its own name, never by States.ALL",
        ),
        Patch(
            ComparisonVariable,
            "_eval_body",
            comparison,
            "a Choice rule on a missing path fails the execution with States.Runtime "
            "(only IsPresent may test a missing path)",
        ),
        Patch(
            aws_sdk,
            "_SERVICE_ERROR_NAMES",
            {**aws_sdk._SERVICE_ERROR_NAMES, "sagemaker": "SageMaker"},
            "AWS SDK integration errors are named <ServiceName>.<ErrorName>Exception in "
            "PascalCase (SageMaker.SageMakerException, SageMaker.ResourceNotFoundException)",
        ),
        Patch(
            aws_sdk.StateTaskServiceAwsSdk,
            "_normalise_response",
            normalise_response,
            "AWS SDK integration results are JSON: timestamps are ISO-8601 strings",
        ),
        Patch(
            retrier_decl,
            "time",
            _ScaledClock(),
            f"every Retry attempt happens, sleeping {retry_time_scale:g} x its interval",
        ),
    ]


def sagemaker_task_failure(env: Any, resource: str, resource_type: str, error: Exception) -> Any:
    """The FailureEvent AWS reports when an optimised SageMaker task's call fails."""
    from botocore.exceptions import ClientError
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
        CustomErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", "ValidationException"))
        message = str(error.response.get("Error", {}).get("Message", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)
    else:
        code, message, status = "InternalFailure", str(error), 500
    name = (
        f"SageMaker.{code.removesuffix('Exception')}Exception"
        if code in SAGEMAKER_MODELED_ERRORS
        else "SageMaker.AmazonSageMakerException"
    )
    cause = (
        f"{message} (Service: AmazonSageMaker; Status Code: {status}; Error Code: {code}; "
        f"Request ID: {uuid.uuid4()}; Proxy: null)"
    )
    return FailureEvent(
        env=env,
        error_name=CustomErrorName(name),
        event_type=HistoryEventType.TaskFailed,
        event_details=EventDetails(
            taskFailedEventDetails=TaskFailedEventDetails(
                resource=resource, resourceType=resource_type, error=name, cause=cause
            )
        ),
    )


def _timestamps_as_strings(value: Any) -> None:
    """In place: every ``datetime`` in ``value`` becomes ``2026-12-04T15:04:05.000Z``."""
    import datetime as dt

    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in list(items):
        if isinstance(item, dt.datetime):
            utc = item.astimezone(dt.UTC) if item.tzinfo else item
            value[key] = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
        else:
            _timestamps_as_strings(item)


def _is_states_runtime(error_name: Any) -> bool:
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )

    return (
        isinstance(error_name, StatesErrorName)
        and error_name.typ == StatesErrorNameType.StatesRuntime
    )


def _runtime_failure(env: Any, cause: str) -> Exception:
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    runtime = StatesErrorNameType.StatesRuntime
    return FailureEventException(
        failure_event=FailureEvent(
            env=env,
            error_name=StatesErrorName(typ=runtime),
            event_type=HistoryEventType.TaskFailed,
            event_details=EventDetails(
                taskFailedEventDetails=TaskFailedEventDetails(error=runtime.to_name(), cause=cause)
            ),
        )
    )
