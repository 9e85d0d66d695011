"""The patches that let moto's Step Functions interpreter run the platform's workflow as AWS would.

moto (pinned to 5.2.5 in requirements-dev.txt: these patches reach into its internals) executes
ASL for real, but it was built for unit tests of single services. Each patch below is declared
with the AWS behaviour it reproduces (``Patch.rule``); the groups are:

1. ``sagemaker:createTrainingJob.sync``: moto rejects ``.sync`` for SageMaker. The patch creates
   the job, hands it to a *training runner* (the local backend runs the real training code;
   tests script an outcome), then polls DescribeTrainingJob as Step Functions does. It also
   creates the ``<job>-aws-training-job`` trial component SageMaker creates for a job with
   ExperimentConfig, and names SageMaker errors as AWS does (strict_asl.sagemaker_task_failure).
2. ``lambda:invoke`` without Docker echoes the payload; the patch runs the function's handler
   in-process with the function's environment and role, and reports exceptions the way Lambda
   does (``errorType`` / ``errorMessage``), which Step Functions turns into the task's error.
3. SageMaker endpoints: moto lacks UpdateEndpoint and knows no GPU endpoint instance types; an
   *endpoint host* decides the endpoint's status and answers InvokeEndpoint (the local backend
   serves the model on 127.0.0.1; tests script answers).
4. The strict interpreter (strict_asl), SageMaker's request rules (sagemaker_rules) and, when an
   IAM twin is given, the evaluation of every call against the caller's synthesized policies.

Tests may inject a fault into any Task state (``FaultInjector``): the task fails with the given
error before it calls its service, exactly as if the service had returned that error.
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
from typing import Any, Literal, Protocol
from urllib.parse import unquote

from finetune.local.call_hook import call_checks_patch
from finetune.local.patching import Patch, applied
from finetune.local.request_shapes import check_request_shape
from finetune.local.sagemaker_rules import check_sagemaker_request, check_unique_name
from finetune.local.strict_asl import sagemaker_task_failure, strict_asl_patches

__all__ = [
    "EndpointHost",
    "FakeLambdaContext",
    "FaultInjector",
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
    def deploy(
        self, endpoint_name: str, endpoint_config: dict[str, Any], model: dict[str, Any]
    ) -> str:
        """Bring ``endpoint_config`` (serving ``model``) up for ``endpoint_name``; return the
        resulting status (``InService``, ``Failed`` or, for an update, ``UpdateRollbackFailed``).
        Called with the model's role: the calls it makes are those of the endpoint."""

    def invoke(self, endpoint_name: str, body: bytes, content_type: str) -> bytes:
        """Answer an InvokeEndpoint request."""

    def delete(self, endpoint_name: str) -> None:
        """Tear the endpoint down."""


class Principals(Protocol):
    """Who makes each call (the IAM twin, finetune/local/iam)."""

    def acting_as(self, principal_arn: str | None) -> contextlib.AbstractContextManager[None]:
        """Calls inside the block are made by ``principal_arn`` (None: the emulator itself)."""

    def on_training_job(self, parameters: dict[str, Any]) -> list[str]:
        """What SageMaker does with the job's role when it runs ``parameters``: the refusals
        (a job whose role may not do its work fails, as on AWS)."""

    def on_endpoint(self, model: dict[str, Any], endpoint_config: dict[str, Any]) -> list[str]:
        """What SageMaker does with the model's role when it serves ``model``: the refusals."""

    def on_sync_task(self, state_machine_role: str, resource: str) -> list[str]:
        """What Step Functions does with the state machine's role to wait for a job (.sync)."""

    def check(self, call: Any) -> None:
        """Refuse ``call`` (an ApiCall) when its principal may not make it."""


@dataclass
class FaultInjector:
    """Task states that fail with ``(error, cause)`` instead of calling their service.

    ``entered`` counts how often each state was entered, so a test can tell an injected fault
    from a state the execution never reached."""

    faults: dict[str, tuple[str, str]] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)

    def check(self, env: Any, state_name: str) -> None:
        if state_name not in self.faults:
            return
        from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
        from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
            CustomErrorName,
        )
        from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
            FailureEvent,
            FailureEventException,
        )
        from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

        error, cause = self.faults[state_name]
        self.fired.append(state_name)
        raise FailureEventException(
            FailureEvent(
                env=env,
                error_name=CustomErrorName(error),
                event_type=HistoryEventType.TaskFailed,
                event_details=EventDetails(
                    taskFailedEventDetails=TaskFailedEventDetails(error=error, cause=cause)
                ),
            )
        )


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


def _no_principals(_: str | None) -> contextlib.AbstractContextManager[None]:
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


def _sagemaker_service(
    runner: TrainingRunner | None,
    stopped_jobs: Literal["fail", "succeed"],
    principals: Principals | None,
) -> type:
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

    acting_as = principals.acting_as if principals is not None else _no_principals
    ending = ("Completed", "Stopped") if stopped_jobs == "succeed" else ("Completed",)

    class SageMakerOptimised(StateTaskServiceUnsupported):
        """``arn:aws:states:::sagemaker:*``: request-response, and ``.sync`` for training."""

        def __init__(self) -> None:
            super().__init__()
            self._supported_integration_patterns = {
                ResourceCondition.WaitForTaskToken,
                ResourceCondition.Sync,
            }

        def _from_error(self, env: Any, ex: Exception) -> Any:
            if isinstance(ex, FailureEventException):
                return ex.failure_event
            return sagemaker_task_failure(
                env, self._get_sfn_resource(), self._get_sfn_resource_type(), ex
            )

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
            parameters = dict(normalised_parameters)
            if principals is not None:
                context = env.states.context_object.context_object_data
                waiting = principals.on_sync_task(
                    context["Execution"].get("RoleArn"), self._get_sfn_resource()
                )
                if waiting:
                    raise RuntimeError("; ".join(waiting))  # the task fails, as on AWS
            refused = principals.on_training_job(parameters) if principals is not None else []
            with acting_as(None):
                _emulate_job_trial_component(client, parameters)
            if refused:
                # SageMaker reports what the role may not do as the job's failure.
                outcome = TrainingOutcome(
                    status="Failed", failure_reason="ClientError: " + "; ".join(refused)[:900]
                )
            else:
                with acting_as(parameters["RoleArn"]):
                    outcome = runner(parameters) if runner else TrainingOutcome()
            _apply_outcome(resource_runtime_part, name, outcome)
            resource = self._get_sfn_resource()
            resource_type = self._get_sfn_resource_type()

            def resolve() -> dict[str, Any] | None:
                job = client.describe_training_job(TrainingJobName=name)
                job.pop("ResponseMetadata", None)
                job = json.loads(json.dumps(job, default=str))
                if job["TrainingJobStatus"] in ("InProgress", "Stopping"):
                    return None
                if job["TrainingJobStatus"] in ending:
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

    return SageMakerOptimised


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


def _task_patches(
    sagemaker_service: type, principals: Principals | None, faults: FaultInjector | None
) -> list[Patch]:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_factory as factory,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service import (  # noqa: E501
        StateTaskService,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task_lambda import (
        StateTaskLambda,
    )

    original_factory: Callable[[str], Any] = factory.state_task_service_for
    acting_as = principals.acting_as if principals is not None else _no_principals

    def state_task_service_for(service_name: str) -> Any:
        if service_name == "sagemaker":
            return sagemaker_service()
        return original_factory(service_name)

    def as_state_machine(original: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        def eval_execution(self: Any, env: Any) -> None:
            context = env.states.context_object.context_object_data
            if faults is not None:
                faults.check(env, context["State"]["Name"])
            with acting_as(context["Execution"].get("RoleArn")):
                original(self, env)

        return eval_execution

    rule = (
        "optimised SageMaker tasks run as AWS runs them: .sync training waits for the job, "
        "errors carry AWS's SageMaker error names"
    )
    return [
        Patch(factory, "state_task_service_for", state_task_service_for, rule),
        Patch(state_task_factory, "state_task_service_for", state_task_service_for, rule),
        Patch(
            StateTaskService,
            "_eval_execution",
            as_state_machine(StateTaskService._eval_execution),
            "every service call of a Task is made with the state machine's role",
        ),
        # A Lambda Task whose Resource is the function ARN (CDK's payload_response_only).
        Patch(
            StateTaskLambda,
            "_eval_execution",
            as_state_machine(StateTaskLambda._eval_execution),
            "Lambda Tasks invoke with the state machine's role",
        ),
    ]


def _lambda_patches(principals: Principals | None) -> list[Patch]:
    from moto.awslambda_simple.models import LambdaSimpleBackend

    acting_as = principals.acting_as if principals is not None else _no_principals

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


def _endpoint_patches(host: EndpointHost | None, principals: Principals | None) -> list[Patch]:
    from moto.core.responses import ActionResult
    from moto.sagemaker import responses as sagemaker_responses
    from moto.sagemaker.models import FakeEndpointConfig, SageMakerModelBackend
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    original_create = SageMakerModelBackend.create_endpoint
    original_delete = SageMakerModelBackend.delete_endpoint
    acting_as = principals.acting_as if principals is not None else _no_principals

    def validate_instance_type(self: Any, instance_type: str) -> None:
        # moto's list predates the GPU families the platform serves on; sagemaker_rules checks
        # instance types against the platform's catalog.
        if not instance_type.startswith("ml."):
            raise ValueError(f"invalid instance type {instance_type!r}")

    def serve(backend: Any, endpoint_name: str, endpoint_config_name: str) -> str:
        config = backend.describe_endpoint_config(endpoint_config_name)
        if host is None:
            return "InService"
        found = backend.describe_model(config["ProductionVariants"][0]["ModelName"])
        model = {
            "ModelName": found.model_name,
            "ExecutionRoleArn": found.execution_role_arn,
            "PrimaryContainer": found.primary_container,
        }
        refused = (
            principals.on_endpoint(model, {**config, "EndpointName": endpoint_name})
            if principals is not None
            else []
        )
        if refused:
            return "Failed"  # the container cannot start: the endpoint fails, as on AWS
        with acting_as(model["ExecutionRoleArn"]):
            return host.deploy(endpoint_name, config, model)

    def create_endpoint(
        self: Any, endpoint_name: str, endpoint_config_name: str, tags: list[dict[str, str]]
    ) -> Any:
        endpoint = original_create(self, endpoint_name, endpoint_config_name, tags)
        endpoint.endpoint_status = serve(self, endpoint_name, endpoint_config_name)
        return endpoint

    def update_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str) -> Any:
        endpoint = self.endpoints[endpoint_name]
        config = self.describe_endpoint_config(endpoint_config_name)
        status = serve(self, endpoint_name, endpoint_config_name)
        if status == "InService":
            endpoint.endpoint_config_name = endpoint_config_name
            endpoint.production_variants = endpoint._process_production_variants(
                config["ProductionVariants"]
            )
        elif status == "Failed":
            # A failed update rolls back: the endpoint keeps serving its previous config.
            status = "InService"
        endpoint.endpoint_status = status
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
        Patch(
            FakeEndpointConfig,
            "validate_instance_type",
            validate_instance_type,
            "endpoint configs accept the GPU instance families SageMaker serves on",
        ),
        Patch(
            SageMakerModelBackend,
            "create_endpoint",
            create_endpoint,
            "CreateEndpoint brings the config's model up with the model's role",
        ),
        Patch(
            SageMakerModelBackend,
            "update_endpoint",
            update_endpoint,
            "UpdateEndpoint switches to the new config once it serves; a failed update rolls "
            "back to the previous config (or ends UpdateRollbackFailed)",
        ),
        Patch(
            SageMakerModelBackend,
            "delete_endpoint",
            delete_endpoint,
            "DeleteEndpoint stops serving",
        ),
        Patch(
            sagemaker_responses.SageMakerResponse,
            "update_endpoint",
            update_endpoint_response,
            "UpdateEndpoint exists",
        ),
        Patch(
            SageMakerRuntimeResponse,
            "invoke_endpoint",
            invoke_endpoint,
            "InvokeEndpoint reaches the model the endpoint serves",
        ),
    ]


@contextlib.contextmanager
def patched_moto(
    *,
    training_runner: TrainingRunner | None = None,
    endpoint_host: EndpointHost | None = None,
    function_log: Callable[[str], object] | None = None,
    principals: Principals | None = None,
    faults: FaultInjector | None = None,
    stopped_jobs: Literal["fail", "succeed"] = "succeed",
    retry_time_scale: float = 0.0,
) -> Iterator[None]:
    """Install the patches for the duration of the block (use inside ``mock_aws``).

    ``function_log`` receives what the in-process functions print (default: stdout).
    ``principals`` (the IAM twin) evaluates every call against the caller's policies.
    ``stopped_jobs``: whether ``.sync`` reports a Stopped training job as a success or a task
    failure; the workflow must refuse it either way, so tests run both.
    """
    sagemaker_service = _sagemaker_service(training_runner, stopped_jobs, principals)
    patches = [
        *_task_patches(sagemaker_service, principals, faults),
        *_lambda_patches(principals),
        *_endpoint_patches(endpoint_host, principals),
        *strict_asl_patches(retry_time_scale=retry_time_scale),
        call_checks_patch(
            [
                check_request_shape,
                check_sagemaker_request,
                check_unique_name,
                *([principals.check] if principals is not None else []),
            ]
        ),
    ]
    # moto warns on every SageMaker state that its integration is "unsupported": patched here.
    unsupported_log = logging.getLogger(
        "moto.stepfunctions.parser.asl.component.state.exec.state_task.service."
        "state_task_service_unsupported"
    )
    unsupported_log.setLevel(logging.ERROR)
    FUNCTION_LOGS.sink = function_log
    try:
        with applied(patches):
            yield
    finally:
        FUNCTION_LOGS.sink = None


def all_rules() -> list[str]:
    """What the twin enforces beyond moto, one line per patch (README, coverage report)."""
    with contextlib.suppress(Exception):
        sagemaker_service = _sagemaker_service(None, "succeed", None)
        patches = [
            *_task_patches(sagemaker_service, None, None),
            *_lambda_patches(None),
            *_endpoint_patches(None, None),
            *strict_asl_patches(),
            call_checks_patch([]),
        ]
        return list(dict.fromkeys(p.rule for p in patches))
    return []
