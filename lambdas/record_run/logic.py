"""Record a run's milestones in SageMaker Experiments and in a JSON run record in S3.

Experiments holds the AWS-native lineage: an experiment per project experiment, a trial per run,
the training job's own trial component associated with it, and a "run" trial component carrying
parameters, dataset and image versions (inputs), model, package and endpoint (outputs), the gate
decision and final metrics. ``runs/<run_id>/run.json`` in the artifacts bucket keeps the whole
story (request, resolution, every milestone with its time) so that nothing is lost on failure and
tools can list runs cheaply.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from runspec.request import Evaluation
from runspec.run import PACKAGE_METADATA_KEYS, GateDecision, RunDocument, TrainedRecord

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker import SageMakerClient

__all__ = [
    "EVALUATION_METRICS",
    "TERMINAL_MILESTONES",
    "Milestone",
    "best_approved_metric",
    "decide_gate",
    "ensure_lineage",
    "record_milestone",
    "summarise",
]

Milestone = Literal[
    "started", "trained", "rejected", "registered", "deployed", "completed", "failed"
]
#: Metrics whose lower value is better; the gate compares on one of them.
EVALUATION_METRICS = ("eval_loss", "perplexity")
RUNS_PREFIX = "runs"
#: SageMaker Experiments limits (API reference: TrialComponentStatus.Message is at most 1,024
#: characters, an artifact value 2,048, a string parameter 2,500).
_MESSAGE_LIMIT = 1024
_ARTIFACT_VALUE_LIMIT = 2048
_PARAMETER_STRING_LIMIT = 2500


@dataclass(frozen=True)
class Clients:
    sagemaker: SageMakerClient
    s3: S3Client


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_component_name(run: RunDocument) -> str:
    return f"{run.trial_name}-run"


def training_component_name(run: RunDocument) -> str:
    """The trial component SageMaker creates for a training job that carries ExperimentConfig."""
    return f"{run.training_job_name}-aws-training-job"


def best_approved_metric(
    sagemaker: SageMakerClient, group: str, metric: str
) -> tuple[float | None, str | None]:
    """The best (lowest) ``metric`` among the group's Approved packages, and that package."""
    best: tuple[float | None, str | None] = (None, None)
    paginator = sagemaker.get_paginator("list_model_packages")
    for page in paginator.paginate(
        ModelPackageGroupName=group, ModelApprovalStatus="Approved", SortBy="CreationTime"
    ):
        for summary in page.get("ModelPackageSummaryList", []):
            arn = summary["ModelPackageArn"]
            package = sagemaker.describe_model_package(ModelPackageName=arn)
            raw = package.get("CustomerMetadataProperties", {}).get(metric)
            if raw is None:
                continue
            value = float(raw)
            if best[0] is None or value < best[0]:
                best = (value, arn)
    return best


def decide_gate(
    gate: Evaluation,
    value: float | None,
    *,
    best_approved_value: float | None = None,
    best_approved_package: str | None = None,
) -> GateDecision:
    """The gate's decision and its reason, made here once; the state machine branches on it.
    Lower is better: the metric must exist, be at most the threshold and, when asked, beat the
    best approved model of the group."""
    metric = gate.metric
    passed, reason = True, ""
    if value is None:
        passed, reason = False, f"the training job reported no {metric}"
    elif gate.threshold is not None and value > gate.threshold:
        passed, reason = False, f"{metric} {value:.4g} is above the threshold {gate.threshold:.4g}"
    elif (
        gate.must_beat_best_approved
        and best_approved_value is not None
        and value >= best_approved_value
    ):
        passed = False
        reason = (
            f"{metric} {value:.4g} does not beat the best approved model "
            f"({best_approved_value:.4g})"
        )
    else:
        reason = f"{metric} {value:.4g} passed the gate"
    return GateDecision(
        metric=metric,
        value=value,
        threshold=gate.threshold,
        must_beat_best_approved=gate.must_beat_best_approved,
        best_approved_value=best_approved_value,
        best_approved_package=best_approved_package,
        passed=passed,
        reason=reason,
    )


def record_milestone(
    clients: Clients,
    *,
    artifacts_bucket: str,
    milestone: Milestone,
    run: RunDocument | None,
    details: dict[str, Any],
    execution_name: str | None = None,
) -> dict[str, Any]:
    """Record ``milestone`` and return what the workflow needs next (metrics for the gate)."""
    if run is None:
        # The request never became a run (Launch failed): keep the failure, keyed by execution.
        _write_json(
            clients.s3,
            artifacts_bucket,
            f"{RUNS_PREFIX}/_invalid/{execution_name or 'unknown'}.json",
            {"milestone": milestone, "at": now().isoformat(), **details},
        )
        return {
            "recorded": milestone,
            "status": "failed",
            "execution_name": execution_name,
            "error": details.get("error"),
        }

    result: dict[str, Any] = {"recorded": milestone}
    if milestone == "failed":
        # The run record first: a run can fail before its lineage exists (even in the step
        # that creates it), and the failure must be recorded whatever Experiments says.
        record = _append_to_record(clients.s3, artifacts_bucket, run, milestone, details)
        ensure_lineage(clients.sagemaker, run)
        _update_component(
            clients.sagemaker, run, status="Failed", message=_failure_message(details)
        )
        result.update(summarise(record))
        return result
    if milestone == "started":
        ensure_lineage(clients.sagemaker, run)
    elif milestone == "trained":
        trained = _trained(clients, artifacts_bucket, run, details)
        result = trained.model_dump(mode="json")
        details = {**details, **result}
    else:
        _other(clients.sagemaker, run, milestone, details)
    record = _append_to_record(clients.s3, artifacts_bucket, run, milestone, details)
    if milestone in TERMINAL_MILESTONES:
        result.update(summarise(record))
    return result


#: Milestones that end a run; recording one returns the run's summary (what notifications say).
TERMINAL_MILESTONES = ("rejected", "completed", "failed")


def summarise(record: dict[str, Any]) -> dict[str, Any]:
    """The run in a few fields: status, metrics, gate decision, package, endpoint, error."""
    summary: dict[str, Any] = {"run_id": record["run_id"], "status": record["status"]}
    for milestone in record["milestones"]:
        if "metrics" in milestone:
            summary["metrics"] = milestone["metrics"]
        if "evaluation" in milestone:
            gate = milestone["evaluation"]
            summary["gate"] = {"passed": gate.get("passed"), "reason": gate.get("reason")}
        for key in ("model_package_arn", "endpoint_name", "error"):
            if milestone.get(key):
                summary[key] = milestone[key]
    run = record.get("run", {})
    summary["training_job_name"] = run.get("training_job_name")
    summary["experiment_name"] = run.get("experiment_name")
    return summary


def ensure_lineage(sagemaker: SageMakerClient, run: RunDocument) -> None:
    """The run's experiment, trial and run component exist and are associated (idempotent)."""
    experiment = run.experiment_name
    _create_if_missing(
        lambda: sagemaker.create_experiment(
            ExperimentName=experiment,
            Description="LLM fine-tuning runs of the platform",
        )
    )
    _create_if_missing(
        lambda: sagemaker.create_trial(
            TrialName=run.trial_name,
            ExperimentName=experiment,
            DisplayName=run.run_id,
        )
    )
    component = run_component_name(run)
    _create_if_missing(
        lambda: sagemaker.create_trial_component(
            TrialComponentName=component,
            DisplayName="run",
            Status={"PrimaryStatus": "InProgress", "Message": "training"},
            StartTime=now(),
            Parameters=_run_parameters(run),
            InputArtifacts=_input_artifacts(run),
        )
    )
    _create_if_missing(
        lambda: sagemaker.associate_trial_component(
            TrialComponentName=component, TrialName=run.trial_name
        )
    )


def _trained(
    clients: Clients, artifacts_bucket: str, run: RunDocument, details: dict[str, Any]
) -> TrainedRecord:
    sagemaker = clients.sagemaker
    job = sagemaker.describe_training_job(TrainingJobName=run.training_job_name)
    metrics = {m["MetricName"]: float(m["Value"]) for m in job.get("FinalMetricDataList", [])}
    gate = run.evaluation
    best_value, best_package = (None, None)
    if gate.must_beat_best_approved:
        best_value, best_package = best_approved_metric(
            sagemaker, run.registration.model_package_group, gate.metric
        )
    decision = decide_gate(
        gate,
        metrics.get(gate.metric),
        best_approved_value=best_value,
        best_approved_package=best_package,
    )
    model_uri = details.get("training", {}).get("model_artifacts")
    contract = _serving_contract(clients.s3, model_uri) if model_uri else None
    metrics_key = f"{RUNS_PREFIX}/{run.run_id}/evaluation.json"
    _write_json(
        clients.s3,
        artifacts_bucket,
        metrics_key,
        {"metrics": metrics, "gate": decision.model_dump(mode="json")},
    )
    # SageMaker creates the job's component from its ExperimentConfig; make sure it belongs to
    # the trial (associating twice is harmless).
    if _exists(
        lambda: sagemaker.describe_trial_component(TrialComponentName=training_component_name(run))
    ):
        _create_if_missing(
            lambda: sagemaker.associate_trial_component(
                TrialComponentName=training_component_name(run), TrialName=run.trial_name
            )
        )
    parameters: dict[str, Any] = {name: {"NumberValue": value} for name, value in metrics.items()}
    parameters["gate_passed"] = {"StringValue": str(decision.passed).lower()}
    parameters["gate_reason"] = {"StringValue": decision.reason[:_PARAMETER_STRING_LIMIT]}
    outputs = {"model": {"Value": str(model_uri)[:_ARTIFACT_VALUE_LIMIT]}} if model_uri else {}
    _update_component(sagemaker, run, parameters=parameters, outputs=outputs)
    return TrainedRecord(
        recorded="trained",
        metrics=metrics,
        billable_seconds=job.get("BillableTimeInSeconds"),
        evaluation=decision,
        model_metrics_s3_uri=f"s3://{artifacts_bucket}/{metrics_key}",
        package_metadata=_package_metadata(run, metrics, contract),
        serving_contract=contract,
    )


#: The manifest the training job writes beside the model (llm_sft.serving_contract).
SERVING_CONTRACT_FILE = "serving_contract.json"


def _serving_contract(s3: S3Client, model_uri: str) -> dict[str, Any] | None:
    """The model's serving contract: the training and serving stacks' versions."""
    bucket, _, prefix = model_uri.removeprefix("s3://").partition("/")
    key = f"{prefix.rstrip('/')}/{SERVING_CONTRACT_FILE}"
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    manifest: dict[str, Any] = json.loads(body)
    return manifest


def _other(
    sagemaker: SageMakerClient, run: RunDocument, milestone: str, details: dict[str, Any]
) -> None:
    if milestone == "rejected":
        reason = details.get("evaluation", {}).get("reason", "rejected by the evaluation gate")
        _update_component(sagemaker, run, status="Completed", message=f"rejected: {reason}")
    elif milestone == "registered":
        arn = str(details.get("model_package_arn", ""))
        _update_component(sagemaker, run, outputs={"model_package": {"Value": arn}})
    elif milestone == "deployed":
        endpoint = str(details.get("endpoint_name", ""))
        _update_component(sagemaker, run, outputs={"endpoint": {"Value": endpoint}})
    elif milestone == "completed":
        _update_component(sagemaker, run, status="Completed", message=details.get("summary", ""))


def _update_component(
    sagemaker: SageMakerClient,
    run: RunDocument,
    *,
    status: str | None = None,
    message: str = "",
    parameters: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
) -> None:
    arguments: dict[str, Any] = {"TrialComponentName": run_component_name(run)}
    if status is not None:
        arguments["Status"] = {"PrimaryStatus": status, "Message": message[:_MESSAGE_LIMIT]}
        arguments["EndTime"] = now()
    if parameters:
        arguments["Parameters"] = parameters
    if outputs:
        arguments["OutputArtifacts"] = outputs
    sagemaker.update_trial_component(**arguments)


def _run_parameters(run: RunDocument) -> dict[str, Any]:
    training = run.training
    parameters: dict[str, Any] = {
        "run_id": {"StringValue": run.run_id},
        "base_model": {"StringValue": run.base_model},
        "training_option": {"StringValue": run.image.option},
        "instance_type": {"StringValue": training.instance_type},
        "instance_count": {"NumberValue": training.instance_count},
        "spot": {"StringValue": str(training.spot).lower()},
    }
    for name, value in training.hyperparameters.items():
        if name.startswith("sagemaker_") or name == "model_id":
            continue
        try:
            parameters[f"hp.{name}"] = {"NumberValue": float(value)}
        except ValueError:
            parameters[f"hp.{name}"] = {"StringValue": value[:_PARAMETER_STRING_LIMIT]}
    return parameters


def _input_artifacts(run: RunDocument) -> dict[str, Any]:
    artifacts: dict[str, Any] = {}
    for name, dataset in run.datasets.items():
        objects = dataset.objects
        if len(objects) == 1 and not dataset.uri.endswith("/"):
            version = objects[0].version_id
            value = dataset.uri + (f"?versionId={version}" if version else "")
        else:
            # A prefix: the URI plus a digest of every pinned (key, version, etag).
            pinned = json.dumps([o.model_dump() for o in objects], sort_keys=True).encode()
            value = f"{dataset.uri}#sha256={hashlib.sha256(pinned).hexdigest()}"
        artifacts[f"dataset-{name}"] = {
            "Value": value[:_ARTIFACT_VALUE_LIMIT],
            "MediaType": "application/jsonlines",
        }
    image = run.image
    artifacts["training-image"] = {"Value": image.uri[:_ARTIFACT_VALUE_LIMIT]}
    if image.source_s3_uri:
        artifacts["training-source"] = {"Value": image.source_s3_uri}
    return artifacts


def _package_metadata(
    run: RunDocument, metrics: dict[str, float], contract: dict[str, Any] | None
) -> dict[str, str]:
    """CustomerMetadataProperties of the model package: lineage at a glance, the metric values
    later runs compare against, and the versions of both sides of the serving contract."""
    metadata = {
        "run_id": run.run_id,
        "training_job": run.training_job_name,
        "base_model": run.base_model[:256],
        "training_image": run.image.uri[:256],
    }
    for name in (*EVALUATION_METRICS, "train_loss"):
        if name in metrics:
            metadata[name] = repr(metrics[name])
    if contract is not None:
        serving = contract.get("serving_stack", {})
        training = contract.get("training_stack", {})
        found = {
            "serving_contract": contract.get("contract_version"),
            "serving_image": serving.get("image"),
            "serving_transformers": serving.get("packages", {}).get("transformers"),
            "serving_tokenizers": serving.get("packages", {}).get("tokenizers"),
            "training_transformers": training.get("transformers"),
            "training_tokenizers": training.get("tokenizers"),
            "training_torch": training.get("torch"),
        }
        metadata.update({k: str(v)[:256] for k, v in found.items() if v is not None})
    assert set(metadata) <= set(PACKAGE_METADATA_KEYS), "keep PACKAGE_METADATA_KEYS complete"
    return metadata


def _failure_message(details: dict[str, Any]) -> str:
    error = details.get("error") or {}
    return f"{error.get('Error', 'Error')}: {error.get('Cause', '')}"


def _append_to_record(
    s3: S3Client, bucket: str, run: RunDocument, milestone: str, details: dict[str, Any]
) -> dict[str, Any]:
    key = f"{RUNS_PREFIX}/{run.run_id}/run.json"
    try:
        record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        record = {"run_id": run.run_id, "run": run.to_state(), "milestones": []}
    record["status"] = milestone
    record["updated_at"] = now().isoformat()
    record["milestones"].append({"milestone": milestone, "at": record["updated_at"], **details})
    _write_json(s3, bucket, key, record)
    return record


def _write_json(s3: S3Client, bucket: str, key: str, document: dict[str, Any]) -> None:
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(document, indent=2, default=str).encode(),
        ContentType="application/json",
    )


def _create_if_missing(call: Any) -> None:
    """Run a create/associate call; an existing resource is fine (milestones may be retried)."""
    try:
        call()
    except Exception as error:  # botocore ClientError; its class is per-client
        message = str(error)
        if "already exists" in message or "ResourceInUse" in message:
            return
        raise


def _exists(describe: Any) -> bool:
    try:
        describe()
    except Exception:  # ResourceNotFound (its class is per-client)
        return False
    return True
