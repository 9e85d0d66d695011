"""The patches that let moto's Step Functions interpreter run the platform's workflow as AWS would.

moto (pinned to 5.2.5 in requirements-dev.txt: these patches reach into its internals) executes
ASL for real, but it was built for unit tests of single services. Each patch below is declared
with the AWS behaviour it reproduces (``Patch.rule``); the groups are:

1. ``sagemaker:createTrainingJob.sync``: moto rejects ``.sync`` for SageMaker. The patch creates
   the job, hands it to a *training runner* (the local backend runs the real training code;
   tests script an outcome), then polls DescribeTrainingJob as Step Functions does. It also
   creates the ``<job>-aws-training-job`` trial component SageMaker creates for a job with
   ExperimentConfig, and names SageMaker errors as AWS does (strict_asl.sagemaker_task_failure).
2. ``lambda:invoke`` runs the function's handler in-process (lambda_patches).
3. SageMaker endpoints and the model registry (endpoint_patches): an *endpoint host* decides the
   endpoint's status and answers InvokeEndpoint.
4. The strict interpreter (strict_asl), SageMaker's request rules (sagemaker_rules) and, when an
   IAM twin is given, the evaluation of every call against the caller's synthesized policies.

Tests may inject a fault into any Task state (``FaultInjector``): the task fails with the given
error before it calls its service, exactly as if the service had returned that error.

Over 400 lines as one idea: the Step Functions interpreter's patches, installed and removed
together (endpoint and Lambda patches live in their own modules).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from finetune.local.call_hook import call_checks_patch
from finetune.local.endpoint_patches import endpoint_patches, model_registry_patches
from finetune.local.event_patches import event_patches
from finetune.local.lambda_patches import (
    FUNCTION_LOGS,
    FakeLambdaContext,
    lambda_patches,
    no_principals,
)
from finetune.local.parse_cache import parse_cache_patch
from finetune.local.patching import Patch, applied
from finetune.local.request_shapes import check_request_shape
from finetune.local.sagemaker_rules import (
    check_endpoint_not_in_transition,
    check_sagemaker_request,
    check_unique_name,
)
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
    #: DescribeTrainingJob's SecondaryStatus (None: the same as ``status``), e.g. a Stopped job's
    #: ``MaxWaitTimeExceeded`` (spot capacity) or ``Stopped`` (StopTrainingJob).
    secondary_status: str | None = None


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
    #: Faults that fire once, as a throttled or briefly unavailable service does.
    transient: dict[str, tuple[str, str]] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)

    def check(self, env: Any, state_name: str) -> None:
        if state_name in self.transient:
            error, cause = self.transient.pop(state_name)
        elif state_name in self.faults:
            error, cause = self.faults[state_name]
        else:
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

    acting_as = principals.acting_as if principals is not None else no_principals
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
    job.secondary_status = outcome.secondary_status or outcome.status
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
    acting_as = principals.acting_as if principals is not None else no_principals

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
    endpoint_transition_checks: int = 1,
) -> Iterator[None]:
    """Install the patches for the duration of the block (use inside ``mock_aws``).

    ``function_log`` receives what the in-process functions print (default: stdout).
    ``principals`` (the IAM twin) evaluates every call against the caller's policies.
    ``stopped_jobs``: whether ``.sync`` reports a Stopped training job as a success or a task
    failure; the workflow must refuse it either way, so tests run both.
    ``endpoint_transition_checks``: how many DescribeEndpoint calls see an endpoint Creating or
    Updating before its outcome.
    """
    sagemaker_service = _sagemaker_service(training_runner, stopped_jobs, principals)
    patches = [
        *_task_patches(sagemaker_service, principals, faults),
        *lambda_patches(principals),
        *endpoint_patches(endpoint_host, principals, endpoint_transition_checks),
        *model_registry_patches(),
        *event_patches(principals),
        *strict_asl_patches(retry_time_scale=retry_time_scale),
        parse_cache_patch(),
        call_checks_patch(
            [
                check_request_shape,
                check_sagemaker_request,
                check_unique_name,
                check_endpoint_not_in_transition,
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
            *lambda_patches(None),
            *endpoint_patches(None, None),
            *model_registry_patches(),
            *event_patches(None),
            *strict_asl_patches(),
            call_checks_patch([]),
        ]
        return list(dict.fromkeys(p.rule for p in patches))
    return []
