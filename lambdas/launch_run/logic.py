"""Resolve a run request into the run document, resolve a deploy request, start runs.

Plain functions over typed arguments; AWS clients are passed in (the handler creates them). The
platform rules live in ``checks``, what is pinned in ``pinning``, the SageMaker job and
deployment plans in ``plans``.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from launch_run.checks import deployment_problems, validate_for_platform
from launch_run.datacheck import check_pinned_datasets
from launch_run.pinning import channels, pin_channel, resolve_image
from launch_run.plans import deployment_plan, training_plan
from launch_run.retry import start_retry
from launch_run.undeploy import undeploy_count, undeploy_execution_name, undeploy_plan
from runspec.attempts import attempt_job_name, attempt_stem
from runspec.naming import (
    derive_run_id,
    run_id_for_execution,
    run_resource_name,
    sagemaker_experiment_name,
)
from runspec.objects import read_json_if_exists
from runspec.request import (
    DeployRequest,
    RunRequest,
    RunRequestError,
    UndeployRequest,
    is_deploy_request,
    is_retry_request,
    is_undeploy_request,
    parse_approval_request,
    parse_deploy_request,
    parse_run_request,
    parse_undeploy_request,
)
from runspec.run import (
    MAX_STATE_BYTES,
    ApprovalOutcome,
    PinnedDataset,
    Registration,
    RunDocument,
    TrainingAttempt,
)
from runspec.settings import PlatformSettings

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_stepfunctions import SFNClient

__all__ = ["resolve_approval", "resolve_deployment", "resolve_run", "start_run"]

#: The run document travels in every state of the execution (256 KiB each, with the rest of the
#: state): it may use at most half.
_MAX_RUN_DOCUMENT_BYTES = MAX_STATE_BYTES // 2


def resolve_run(
    payload: object,
    settings: PlatformSettings,
    *,
    execution_name: str | None,
    s3: S3Client,
    ecr: ECRClient,
) -> RunDocument:
    """Everything the workflow needs to run ``payload``: validated request with defaults,
    run id, pinned dataset versions, pinned image, training job, gate, registration and
    deployment. Raises RunRequestError naming each bad field."""
    request = parse_run_request(payload)
    problems = validate_for_platform(request, settings)
    if problems:
        raise RunRequestError(problems)
    run_id = run_id_for_execution(request, execution_name)
    resource_name = run_resource_name(settings.prefix, run_id)

    datasets: dict[str, PinnedDataset] = {}
    for channel in channels(request, settings):
        try:
            datasets[channel.name] = pin_channel(s3, channel)
        except RunRequestError:
            # The default location's validation file is optional: training then splits off a
            # validation share of the training data.
            if request.dataset is None and channel.name == "validation":
                continue
            raise
    image = resolve_image(request, settings, ecr)
    stem = attempt_stem(settings.prefix, run_id)
    tags = [{"Key": "ft:run-id", "Value": run_id}] + [
        {"Key": key, "Value": value} for key, value in sorted(request.tags.items())
    ]
    run = RunDocument(
        mode="train",
        run_id=run_id,
        execution_name=execution_name,
        experiment_name=sagemaker_experiment_name(settings.prefix, request.experiment_name),
        trial_name=resource_name,
        training_job_name=resource_name,
        request=request.model_dump(mode="json"),
        base_model=request.base_model,
        datasets=datasets,
        image=image,
        training=training_plan(request, settings, run_id=run_id, datasets=datasets, image=image),
        evaluation=request.evaluation,
        registration=Registration(
            model_package_group=settings.model_package_group,
            approval_status=settings.model_approval_status,
        ),
        deployment=deployment_plan(
            request.deployment,
            request,
            settings,
            run_id=run_id,
            execution_name=execution_name or run_id,
            approved=settings.model_approval_status == "Approved",
        ),
        tags=tags,
        attempt=TrainingAttempt(number=1, training_job_name=attempt_job_name(stem, 1), stem=stem),
    )
    _check_size(run)
    # Last, once everything cheaper passed: the pinned objects through the training code's
    # data rules (bounded; the job still checks every row).
    checked = check_pinned_datasets(s3, datasets)
    if checked.problems:
        raise RunRequestError(checked.problems)
    return run


def _check_size(run: RunDocument) -> None:
    size = len(json.dumps(run.to_state()))
    if size > _MAX_RUN_DOCUMENT_BYTES:
        counts = ", ".join(f"{len(d.objects)} in {name}" for name, d in run.datasets.items())
        raise RunRequestError(
            [
                f"dataset: the run pins too many objects ({counts}) to travel through the "
                f"workflow (its state holds at most {MAX_STATE_BYTES // 1024} KiB); merge the "
                "files into fewer, larger JSONL objects"
            ]
        )


def resolve_deployment(
    payload: object,
    settings: PlatformSettings,
    *,
    s3: S3Client,
    sagemaker: SageMakerClient,
    execution_name: str | None = None,
) -> RunDocument:
    """The run document for deploying an earlier run's Approved model package in the execution
    ``execution_name`` (default: the name ``start_run`` gives deploy executions)."""
    request = parse_deploy_request(payload)
    key = f"runs/{request.deploy_run}/run.json"
    record = read_json_if_exists(s3, settings.artifacts_bucket, key)
    if record is None:
        raise RunRequestError([f"deploy_run: no run {request.deploy_run!r} is recorded"])
    package_arn = next(
        (m["model_package_arn"] for m in record["milestones"] if m.get("model_package_arn")), None
    )
    if package_arn is None:
        raise RunRequestError(
            [
                f"deploy_run: run {request.deploy_run!r} registered no model "
                f"(status {record['status']})"
            ]
        )
    package = sagemaker.describe_model_package(ModelPackageName=package_arn)
    if package["ModelApprovalStatus"] != "Approved":
        raise RunRequestError(
            [
                f"deploy_run: the model of run {request.deploy_run!r} is "
                f"{package['ModelApprovalStatus']}; approve it first (finetune promote)"
            ]
        )
    run = RunDocument.model_validate(record["run"])
    original = parse_run_request(run.request)
    deployment = request.deployment or original.deployment.model_copy(update={"enabled": True})
    problems = deployment_problems(original.model_copy(update={"deployment": deployment}), settings)
    if not deployment.enabled:
        problems.append("deployment.enabled: must be true to deploy")
    if problems:
        raise RunRequestError(problems)
    model_artifacts = _recorded_model(record, package, request.deploy_run)
    return run.model_copy(
        update={
            "mode": "deploy",
            "model_artifacts": model_artifacts,
            "model_package_arn": package_arn,
            "deployment": deployment_plan(
                deployment,
                original,
                settings,
                run_id=run.run_id,
                execution_name=execution_name or deploy_execution_name(request),
                approved=True,
            ),
        }
    )


#: The milestones that end a run's own execution (record_run.logic.TERMINAL_MILESTONES).
_RUN_ENDED = ("rejected", "completed", "failed")


def resolve_approval(
    payload: object,
    settings: PlatformSettings,
    *,
    s3: S3Client,
    sagemaker: SageMakerClient,
    sfn: SFNClient,
    ecr: ECRClient,
) -> RunDocument:
    """What to do about an approved model package (``{"approved_package": "<ARN>"}``, what the
    approval rule starts the workflow with): the run it belongs to, as recorded, with
    ``mode: approval`` and the decision in ``approval``.

    The package names its run in the ``run_id`` metadata the record function wrote (Studio users
    may not write it), and the run's record must name this very package. Deployment is the run's
    own request: nothing is deployed unless ``deployment.enabled`` was asked. When it was, the
    run's one deploy execution is started (``{"deploy_run": <run id>}``, the execution
    ``finetune promote`` starts too), so that repeated events and a promote deploy once; a
    package registered Approved is deployed by its run's own execution, while it runs.
    Raises RunRequestError when the package is not a platform run's or cannot be deployed."""
    request = parse_approval_request(payload)
    arn = request.approved_package
    try:
        package = sagemaker.describe_model_package(ModelPackageName=arn)
    except ClientError as error:  # SageMaker answers a missing package ValidationException
        if error.response["Error"]["Code"] != "ValidationException":
            raise
        raise RunRequestError([f"approved_package: {arn} does not exist"]) from None
    if package.get("ModelPackageGroupName") != settings.model_package_group:
        group = settings.model_package_group
        raise RunRequestError([f"approved_package: {arn} is not in the platform's group {group}"])
    run_id = (package.get("CustomerMetadataProperties") or {}).get("run_id")
    if not run_id:
        raise RunRequestError(
            [f"approved_package: {arn} was not registered by a platform run (no run_id metadata)"]
        )
    record = read_json_if_exists(s3, settings.artifacts_bucket, f"runs/{run_id}/run.json")
    if record is None:
        raise RunRequestError([f"approved_package: no run {run_id!r} is recorded"])
    registered = [
        m.get("model_package_arn") for m in record["milestones"] if m.get("model_package_arn")
    ]
    if arn not in registered:
        raise RunRequestError(
            [
                f"approved_package: run {run_id!r} did not register {arn} "
                f"(it registered {registered})"
            ]
        )
    run = RunDocument.model_validate(record["run"])
    asked = parse_run_request(run.request).deployment.enabled
    deploy_execution = None
    if package["ModelApprovalStatus"] != "Approved":
        decision, reason = (
            "no-longer-approved",
            f"the package is {package['ModelApprovalStatus']} now",
        )
    elif not asked:
        decision = "not-requested"
        reason = f"run {run_id!r} did not ask for deployment (deployment.enabled); nothing deployed"
    elif run.registration.approval_status == "Approved" and record.get("status") not in _RUN_ENDED:
        decision = "deployed-by-run"
        reason = f"run {run_id!r} registered it Approved; its own execution deploys it"
    else:
        started = start_run(
            {"deploy_run": run_id}, settings, sfn=sfn, s3=s3, ecr=ecr, sagemaker=sagemaker
        )
        deploy_execution = str(started["execution_arn"])
        decision = "deploying"
        reason = (
            f"run {run_id!r} asked for deployment: its deploy execution "
            f"{'started' if started['started'] else 'already exists'}"
        )
    outcome = ApprovalOutcome(
        model_package_arn=arn,
        decision=decision,
        reason=reason,
        deploy_execution_arn=deploy_execution,
    )
    return run.model_copy(update={"mode": "approval", "approval": outcome})


def _recorded_model(record: dict[str, Any], package: Any, run_id: str) -> str:
    """The model the run trained, from its record (written by the platform only); the package
    must still point at it. Whoever may approve a package may also update its inference
    specification (no IAM condition key covers it), so the package alone is not trusted."""
    trained = next(
        (
            m.get("training", {}).get("model_artifacts")
            for m in record["milestones"]
            if m.get("milestone") == "trained"
        ),
        None,
    )
    if not trained:
        raise RunRequestError([f"deploy_run: run {run_id!r} recorded no trained model"])
    containers = package.get("InferenceSpecification", {}).get("Containers", [])
    packaged = {
        c.get("ModelDataSource", {}).get("S3DataSource", {}).get("S3Uri") for c in containers
    }
    if packaged != {trained}:
        raise RunRequestError(
            [
                f"deploy_run: the model package of run {run_id!r} no longer points at the model "
                f"the run trained ({trained}; the package names {sorted(map(str, packaged))}); "
                "it was changed after registration"
            ]
        )
    return str(trained)


def deploy_execution_name(request: DeployRequest, *, undeploys: int = 0) -> str:
    """A deploy request's execution: ``<run id>-deploy-<hash of the request>``; after the run's
    endpoint was undeployed ``undeploys`` times, the hash covers that count too, so that the
    same request deploys the run again (before, it is the one deployment it started)."""
    text = json.dumps(request.model_dump(mode="json", exclude_defaults=True), sort_keys=True)
    if undeploys:
        text += f"#undeployed-{undeploys}"
    return f"{request.deploy_run}-deploy-{_short_hash(text)}"


def start_run(
    payload: object,
    settings: PlatformSettings,
    *,
    sfn: SFNClient,
    s3: S3Client,
    ecr: ECRClient,
    sagemaker: SageMakerClient,
) -> dict[str, Any]:
    """Start the workflow for ``payload`` (a run request, a deploy or an undeploy request) with
    the run id as (the start of) the execution name.

    The request is resolved first (nothing starts when it is invalid). Starting the same request
    again returns the existing execution instead of a second run.
    """
    request: RunRequest | DeployRequest | UndeployRequest
    if is_retry_request(payload):
        return start_retry(payload, settings, sfn=sfn, s3=s3)
    if is_undeploy_request(payload):
        undeploy = parse_undeploy_request(payload)
        plan = undeploy_plan(undeploy, settings, s3=s3, sagemaker=sagemaker, cloudwatch=None)
        name, run_id, request = undeploy_execution_name(plan), plan.run_id, undeploy
    elif is_deploy_request(payload):
        deploy = parse_deploy_request(payload)
        resolve_deployment(payload, settings, s3=s3, sagemaker=sagemaker)
        record = read_json_if_exists(
            s3, settings.artifacts_bucket, f"runs/{deploy.deploy_run}/run.json"
        )
        name = deploy_execution_name(deploy, undeploys=undeploy_count(record or {}))
        run_id, request = deploy.deploy_run, deploy
    else:
        request = parse_run_request(payload)
        run_id = name = derive_run_id(request)
        resolve_run(payload, settings, execution_name=run_id, s3=s3, ecr=ecr)
    execution_input = json.dumps(request.model_dump(mode="json", exclude_defaults=True))
    execution_arn = _execution_arn(settings.state_machine_arn, name)
    try:
        started = sfn.start_execution(
            stateMachineArn=settings.state_machine_arn, name=name, input=execution_input
        )
        return {"run_id": run_id, "execution_arn": started["executionArn"], "started": True}
    except sfn.exceptions.ExecutionAlreadyExists:
        existing = sfn.describe_execution(executionArn=execution_arn)
        if json.loads(existing["input"]) != json.loads(execution_input):
            raise RunRequestError(
                [
                    f"run_name: run id {run_id!r} is already used by a different request; "
                    "choose another run_name"
                ]
            ) from None
        return {
            "run_id": run_id,
            "execution_arn": existing["executionArn"],
            "started": False,
            "status": existing["status"],
        }


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
