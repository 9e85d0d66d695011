"""The smallest patches that let moto's Step Functions interpreter run the platform's workflow.

moto (pinned to 5.2.5 in requirements-dev.txt: these patches reach into its internals) executes
ASL for real, but it was built for unit tests of single services. Three gaps matter here, and
each patch does only what the real service would do:

1. ``sagemaker:createTrainingJob.sync``: moto rejects ``.sync`` for SageMaker ("Unsupported sync
   callback procedure"). The patch creates the job, hands it to a *training runner* (the local
   backend runs the real training code; tests script an outcome), then polls DescribeTrainingJob
   like Step Functions does, failing the task with ``States.TaskFailed`` and the job description
   as cause when the job failed. It also creates the ``<job>-aws-training-job`` trial component
   that SageMaker creates for a job with ExperimentConfig.
2. ``lambda:invoke`` without Docker echoes the payload; the patch runs the function's handler
   in-process with the function's environment, and reports exceptions the way Lambda does
   (``errorType`` / ``errorMessage``), which Step Functions turns into the task's error.
3. SageMaker endpoints: moto lacks UpdateEndpoint and knows no GPU endpoint instance types; the
   patch adds both, and lets an *endpoint host* decide the endpoint's status and answer
   InvokeEndpoint (the local backend serves the model on 127.0.0.1; tests script answers).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

__all__ = [
    "EndpointHost",
    "FakeLambdaContext",
    "TrainingOutcome",
    "TrainingRunner",
    "patched_moto",
]


@dataclass
class TrainingOutcome:
    """What a training job ended with, as DescribeTrainingJob reports it."""

    status: str = "Completed"  # Completed | Failed | Stopped
    metrics: dict[str, float] = field(default_factory=dict)
    model_artifacts: str | None = None  # S3 URI; None keeps moto's
    failure_reason: str | None = None
    billable_seconds: int = 0


class TrainingRunner(Protocol):
    def __call__(self, parameters: dict[str, Any]) -> TrainingOutcome:
        """Run the CreateTrainingJob request ``parameters`` and say how it ended."""


class EndpointHost(Protocol):
    def deploy(self, endpoint_name: str, endpoint_config: dict[str, Any]) -> str:
        """Bring ``endpoint_config`` up for ``endpoint_name``; return the resulting status
        (``InService`` or ``Failed``)."""

    def invoke(self, endpoint_name: str, body: bytes, content_type: str) -> bytes:
        """Answer an InvokeEndpoint request."""

    def delete(self, endpoint_name: str) -> None:
        """Tear the endpoint down."""


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


def _invoke_in_process(
    backend: Any, function_name: str, qualifier: Any, body: Any, response_headers: dict[str, str]
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


def _training_sync_service(runner: TrainingRunner | None) -> type:
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
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import (
        ResourceCondition,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_unsupported import (  # noqa: E501
        StateTaskServiceUnsupported,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for
    from moto.stepfunctions.parser.asl.utils.encoding import to_json_str

    class SageMakerWithSync(StateTaskServiceUnsupported):
        def __init__(self) -> None:
            super().__init__()
            self._supported_integration_patterns = {
                ResourceCondition.WaitForTaskToken,
                ResourceCondition.Sync,
            }

        def _build_sync_resolver(  # type: ignore[no-untyped-def]
            self, env, resource_runtime_part, normalised_parameters, state_credentials
        ):
            action = self._get_boto_service_action()
            if action != "create_training_job":
                raise RuntimeError(f"no local .sync for sagemaker:{action}")
            client = boto_client_for(
                service="sagemaker",
                region=resource_runtime_part.region,
                state_credentials=state_credentials,
            )
            name = normalised_parameters["TrainingJobName"]
            _emulate_job_trial_component(client, normalised_parameters)
            outcome = runner(dict(normalised_parameters)) if runner else TrainingOutcome()
            _apply_outcome(resource_runtime_part, name, outcome)
            resource = self._get_sfn_resource()
            resource_type = self._get_sfn_resource_type()

            def resolve() -> dict[str, Any] | None:
                job = client.describe_training_job(TrainingJobName=name)
                job.pop("ResponseMetadata", None)
                job = json.loads(json.dumps(job, default=str))
                if job["TrainingJobStatus"] in ("InProgress", "Stopping"):
                    return None
                if job["TrainingJobStatus"] == "Completed":
                    return job
                raise FailureEventException(
                    FailureEvent(
                        env=env,
                        error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                        event_type=HistoryEventType.TaskFailed,
                        event_details=EventDetails(
                            taskFailedEventDetails=TaskFailedEventDetails(
                                resource=resource,
                                resourceType=resource_type,
                                error=StatesErrorNameType.StatesTaskFailed.to_name(),
                                cause=to_json_str(job),
                            )
                        ),
                    )
                )

            return resolve

    return SageMakerWithSync


def _emulate_job_trial_component(client: Any, parameters: dict[str, Any]) -> None:
    """SageMaker creates ``<job>-aws-training-job`` and adds it to the ExperimentConfig trial."""
    config = parameters.get("ExperimentConfig") or {}
    if not config.get("TrialName"):
        return
    component = f"{parameters['TrainingJobName']}-aws-training-job"
    with contextlib.suppress(Exception):  # already there on a retried state
        client.create_trial_component(TrialComponentName=component, DisplayName="training")
    with contextlib.suppress(Exception):
        client.associate_trial_component(
            TrialComponentName=component, TrialName=config["TrialName"]
        )


def _apply_outcome(runtime: Any, name: str, outcome: TrainingOutcome) -> None:
    from moto.sagemaker.models import sagemaker_backends

    job = sagemaker_backends[runtime.account][runtime.region].training_jobs[name]
    job.training_job_status = outcome.status
    job.secondary_status = outcome.status
    job.final_metric_data_list = [
        {"MetricName": metric, "Value": value, "Timestamp": job.creation_time}
        for metric, value in outcome.metrics.items()
    ]
    if outcome.model_artifacts is not None:
        job.model_artifacts = {"S3ModelArtifacts": outcome.model_artifacts}
    if outcome.failure_reason is not None:
        job.failure_reason = outcome.failure_reason
    job.billable_time_in_seconds = outcome.billable_seconds


def _endpoint_patches(host: EndpointHost | None) -> list[tuple[Any, str, Any]]:
    from moto.core.responses import ActionResult
    from moto.sagemaker import responses as sagemaker_responses
    from moto.sagemaker.models import FakeEndpointConfig, SageMakerModelBackend
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    original_create = SageMakerModelBackend.create_endpoint
    original_delete = SageMakerModelBackend.delete_endpoint

    def validate_instance_type(self: Any, instance_type: str) -> None:
        # moto's list predates the GPU families the platform serves on.
        if not instance_type.startswith("ml."):
            raise ValueError(f"invalid instance type {instance_type!r}")

    def create_endpoint(
        self: Any, endpoint_name: str, endpoint_config_name: str, tags: list[dict[str, str]]
    ) -> Any:
        endpoint = original_create(self, endpoint_name, endpoint_config_name, tags)
        if host is not None:
            config = self.describe_endpoint_config(endpoint_config_name)
            endpoint.endpoint_status = host.deploy(endpoint_name, config)
        return endpoint

    def update_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str) -> Any:
        endpoint = self.endpoints[endpoint_name]
        config = self.describe_endpoint_config(endpoint_config_name)
        endpoint.endpoint_config_name = endpoint_config_name
        endpoint.production_variants = endpoint._process_production_variants(
            config["ProductionVariants"]
        )
        endpoint.endpoint_status = (
            host.deploy(endpoint_name, config) if host is not None else "InService"
        )
        return endpoint

    def delete_endpoint(self: Any, endpoint_name: str) -> None:
        original_delete(self, endpoint_name)
        if host is not None:
            host.delete(endpoint_name)

    def update_endpoint_response(self: Any) -> Any:
        endpoint = self.sagemaker_backend.update_endpoint(
            endpoint_name=self._get_param("EndpointName"),
            endpoint_config_name=self._get_param("EndpointConfigName"),
        )
        return ActionResult({"EndpointArn": endpoint.arn})

    def invoke_endpoint(self: Any) -> Any:
        # moto's backend method never sees the request body; answer at the response layer.
        endpoint_name = unquote(self.path.split("/")[2])
        body = self.body if isinstance(self.body, bytes) else str(self.body).encode()
        if host is None:
            answer = json.dumps([{"generated_text": "hello"}]).encode()
        else:
            answer = host.invoke(endpoint_name, body, self.headers.get("Content-Type", ""))
        return 200, {"Content-Type": "application/json"}, answer

    return [
        (FakeEndpointConfig, "validate_instance_type", validate_instance_type),
        (SageMakerModelBackend, "create_endpoint", create_endpoint),
        (SageMakerModelBackend, "update_endpoint", update_endpoint),
        (SageMakerModelBackend, "delete_endpoint", delete_endpoint),
        (sagemaker_responses.SageMakerResponse, "update_endpoint", update_endpoint_response),
        (SageMakerRuntimeResponse, "invoke_endpoint", invoke_endpoint),
    ]


@contextlib.contextmanager
def patched_moto(
    *,
    training_runner: TrainingRunner | None = None,
    endpoint_host: EndpointHost | None = None,
    function_log: Callable[[str], object] | None = None,
) -> Iterator[None]:
    """Install the patches for the duration of the block (use inside ``mock_aws``).

    ``function_log`` receives what the in-process functions print (default: stdout)."""
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_factory as factory,
    )

    sync_service = _training_sync_service(training_runner)
    original_factory: Callable[[str], Any] = factory.state_task_service_for

    def state_task_service_for(service_name: str) -> Any:
        if service_name == "sagemaker":
            return sync_service()
        return original_factory(service_name)

    def invoke(
        self: Any,
        function_name: str,
        qualifier: Any,
        body: Any,
        headers: Any,
        response_headers: Any,
    ) -> bytes:
        return _invoke_in_process(self, function_name, qualifier, body, response_headers)

    patches: list[tuple[Any, str, Any]] = [
        (factory, "state_task_service_for", state_task_service_for),
        (LambdaSimpleBackend, "invoke", invoke),
        *_endpoint_patches(endpoint_host),
    ]
    originals = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in patches]
    # moto warns on every SageMaker state that its integration is "unsupported": patched here.
    unsupported_log = logging.getLogger(
        "moto.stepfunctions.parser.asl.component.state.exec.state_task.service."
        "state_task_service_unsupported"
    )
    unsupported_log.setLevel(logging.ERROR)
    FUNCTION_LOGS.sink = function_log
    try:
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        _patch_parser_imports(factory, state_task_service_for)
        yield
    finally:
        FUNCTION_LOGS.sink = None
        for owner, name, original in originals:
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        _patch_parser_imports(factory, original_factory)


def _patch_parser_imports(factory: Any, function: Callable[[str], Any]) -> None:
    """Modules that imported ``state_task_service_for`` by name hold their own reference."""
    for module in list(sys.modules.values()):
        if (
            module is not None
            and getattr(module, "__name__", "").startswith("moto.stepfunctions")
            and getattr(module, "state_task_service_for", None) is not None
            and module is not factory
        ):
            setattr(module, "state_task_service_for", function)  # noqa: B010
