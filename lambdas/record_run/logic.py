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
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from record_run.attempts import current_job_name, recorded_attempts, resumed
from record_run.endpoint_changes import deployed_change, undeploy_change, undeploy_summary
from record_run.gate import (
    BestApproved,
    basis_metadata,
    best_approved,
    decide_gate,
    pinned_basis,
)
from record_run.mlflow_rest import MlflowRest
from runspec.objects import read_json_if_exists
from runspec.request import EVALUATION_METRICS as _SCORED_METRICS
from runspec.run import PACKAGE_METADATA_KEYS, RunDocument, ScoringBasis, TrainedRecord

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

logger = logging.getLogger(__name__)

Milestone = Literal[
    "started",
    "trained",
    "rejected",
    "registered",
    "deployed",
    "completed",
    "failed",
    "undeployed",
]
#: Metrics a run is scored by (runspec.request: losses lower is better, task metrics higher).
EVALUATION_METRICS = _SCORED_METRICS
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
    #: The MLflow App the job logged to (None: MLflow is off, or not granted to this function).
    mlflow: MlflowRest | None = None


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_component_name(run: RunDocument) -> str:
    return f"{run.trial_name}-run"


def training_component_name(run: RunDocument) -> str:
    """The trial component SageMaker creates for a training job that carries ExperimentConfig
    (the current attempt's)."""
    return f"{current_job_name(run)}-aws-training-job"


def best_approved_metric(
    sagemaker: SageMakerClient, group: str, metric: str, basis: ScoringBasis | None = None
) -> tuple[float | None, str | None]:
    """The best ``metric`` among the group's Approved packages scored on a basis comparable
    with ``basis`` (None: all of them), and that package."""
    found = best_approved(sagemaker, group, [metric], basis).get(metric, BestApproved())
    return found.value, found.package


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
    if run.mode == "undeploy":
        # Only the run's endpoint changed (or failed to): its status and milestones stay.
        error = details.get("error") if milestone == "failed" else None
        change = undeploy_change(run, error=error or ({} if milestone == "failed" else None))
        record = _append_to_record(
            clients.s3, artifacts_bucket, run, None, details, endpoint_change=change
        )
        return {**result, **undeploy_summary(record, change)}
    if milestone == "failed":
        # The run record first: a run can fail before its lineage exists (even in the step
        # that creates it), and the failure must be recorded whatever Experiments says.
        record = _append_to_record(
            clients.s3, artifacts_bucket, run, milestone, details, sagemaker=clients.sagemaker
        )
        ensure_lineage(clients.sagemaker, run)
        _update_component(
            clients.sagemaker, run, status="Failed", message=_failure_message(details)
        )
        _to_mlflow(clients, run, record, milestone, details)
        result.update(summarise(record))
        return result
    if milestone == "started":
        ensure_lineage(clients.sagemaker, run)
        if run.resume is not None:  # a retry: which one, and where it resumed
            details = {**details, **resumed(run)}
    elif milestone == "trained":
        trained = _trained(clients, artifacts_bucket, run, details)
        result = trained.model_dump(mode="json")
        details = {**details, **result}
    else:
        _other(clients.sagemaker, run, milestone, details)
    record = _append_to_record(
        clients.s3,
        artifacts_bucket,
        run,
        milestone,
        details,
        sagemaker=clients.sagemaker if milestone == "trained" else None,
        endpoint_change=deployed_change(run, details, clients.sagemaker.meta.region_name)
        if milestone == "deployed"
        else None,
    )
    _to_mlflow(clients, run, record, milestone, details)
    if milestone in TERMINAL_MILESTONES:
        result.update(summarise(record))
    return result


def _to_mlflow(
    clients: Clients,
    run: RunDocument,
    record: dict[str, Any],
    milestone: str,
    details: dict[str, Any],
) -> None:
    """Add what this milestone tells to the run's MLflow run (the one its training job logged
    to), so that MLflow holds the whole run. Best effort, like the job's tracking: the run record
    in S3 keeps everything when MLflow cannot be reached."""
    if clients.mlflow is None:
        return
    try:
        mlflow_run = _mlflow_run_id(clients.mlflow, run, record)
        if mlflow_run is None:
            logger.warning("MLflow: run %s has no MLflow run to add %s to", run.run_id, milestone)
            return
        metrics, tags = mlflow_facts(run, milestone, details)
        clients.mlflow.log_batch(mlflow_run, metrics=metrics, tags=tags)
    except Exception as error:  # urllib, MLflow or signing errors: never the run's failure
        logger.warning("MLflow: the %s milestone was not logged: %s", milestone, error)


def _mlflow_run_id(mlflow: MlflowRest, run: RunDocument, record: dict[str, Any]) -> str | None:
    for milestone in reversed(record.get("milestones", [])):
        if milestone.get("mlflow_run_id"):
            return str(milestone["mlflow_run_id"])
    # The job tags its MLflow run with the run id (llm_sft.tracking).
    return mlflow.find_run(run.experiment_name, "run_id", run.run_id)


def mlflow_facts(
    run: RunDocument, milestone: str, details: dict[str, Any]
) -> tuple[dict[str, float], dict[str, object]]:
    """The metrics and tags a milestone adds to the MLflow run."""
    metrics: dict[str, float] = {}
    tags: dict[str, object] = {"platform.status": milestone}
    if milestone == "trained":
        gate = details.get("evaluation") or {}
        tags.update(
            {
                "gate.passed": str(bool(gate.get("passed"))).lower(),
                "gate.reason": gate.get("reason", ""),
                "gate.rules": json.dumps(
                    [r["rule"] for r in gate.get("rules", [])]
                    + [f"beats best approved {c['metric']}" for c in gate.get("best_approved", [])]
                ),
                "image.uri": run.image.uri,
                "image.digest": run.image.digest or "",
                "sagemaker.training_job": current_job_name(run),
            }
        )
        for comparison in gate.get("best_approved", []):
            if comparison.get("best_approved_package"):
                tags[f"gate.best_approved.{comparison['metric']}"] = comparison[
                    "best_approved_package"
                ]
        scoring = details.get("scoring") or {}
        tags.update({f"scored.{k}": v for k, v in scoring.items() if v is not None})
        metrics["gate_passed"] = 1.0 if gate.get("passed") else 0.0
        billable = details.get("billable_seconds")
        if billable is not None:
            metrics["billable_seconds"] = float(billable)
            cost = training_cost(run, float(billable))
            if cost is not None:
                metrics["training_cost_usd"] = cost
    elif milestone == "registered":
        tags["model_package.arn"] = details.get("model_package_arn", "")
        tags["model_package.approval"] = run.registration.approval_status
    elif milestone == "deployed":
        tags["endpoint.name"] = details.get("endpoint_name", "")
        tags["endpoint.instance_type"] = run.deployment.instance_type
    elif milestone == "rejected":
        tags["gate.passed"] = "false"
    elif milestone == "failed":
        error = details.get("error") or {}
        tags["platform.error"] = f"{error.get('Error', 'Error')}: {error.get('Cause', '')}"
    return metrics, tags


def training_cost(run: RunDocument, billable_seconds: float) -> float | None:
    """Billable training time at the catalog's on-demand price (spot discount when spot)."""
    from runspec.catalog import UnknownInstanceType, get_catalog, get_instance

    try:
        spec = get_instance(run.training.instance_type)
    except UnknownInstanceType:
        return None
    price = spec.price("us-east-1")
    if price is None:
        return None
    hourly = price[0] * run.training.instance_count
    if run.training.spot:
        hourly *= 1 - get_catalog().spot_discount(spec)
    return round(hourly * billable_seconds / 3600, 4)


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
    job_name = details.get("training", {}).get("training_job_name") or current_job_name(run)
    job = sagemaker.describe_training_job(TrainingJobName=job_name)
    metrics = {m["MetricName"]: float(m["Value"]) for m in job.get("FinalMetricDataList", [])}
    model_uri = details.get("training", {}).get("model_artifacts")
    contract = _model_file(clients.s3, model_uri, SERVING_CONTRACT_FILE) if model_uri else None
    summary = _model_file(clients.s3, model_uri, EVALUATION_SUMMARY_FILE) if model_uri else None
    # The job's own figures are exact (the log lines SageMaker parses carry 6 digits).
    metrics.update(_summary_metrics(summary))
    basis = _summary_basis(summary) or pinned_basis(run)
    gate = run.evaluation
    must_beat = gate.must_beat_metrics()
    best = (
        best_approved(sagemaker, run.registration.model_package_group, must_beat, basis)
        if must_beat
        else {}
    )
    decision = decide_gate(gate, metrics, best=best, basis=basis)
    metrics_key = f"{RUNS_PREFIX}/{run.run_id}/evaluation.json"
    _write_json(
        clients.s3,
        artifacts_bucket,
        metrics_key,
        {
            "metrics": metrics,
            "gate": decision.model_dump(mode="json"),
            "scoring": basis.model_dump(mode="json"),
            "test_set": (summary or {}).get("data"),
            "tokenizer": (summary or {}).get("tokenizer"),
        },
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
    parameters["scored_data_sha256"] = {"StringValue": basis.data_sha256}
    outputs = {"model": {"Value": str(model_uri)[:_ARTIFACT_VALUE_LIMIT]}} if model_uri else {}
    _update_component(sagemaker, run, parameters=parameters, outputs=outputs)
    mlflow_run = (summary or {}).get("mlflow_run_id")
    return TrainedRecord(
        recorded="trained",
        metrics=metrics,
        billable_seconds=job.get("BillableTimeInSeconds"),
        evaluation=decision,
        model_metrics_s3_uri=f"s3://{artifacts_bucket}/{metrics_key}",
        package_metadata=_package_metadata(run, metrics, contract, basis),
        serving_contract=contract,
        scoring=basis,
        test_set=_test_set(run, summary) if basis.dataset == "test" else None,
        tokenizer=(summary or {}).get("tokenizer"),
        mlflow_run_id=str(mlflow_run) if mlflow_run else None,
    )


def _test_set(run: RunDocument, summary: dict[str, Any] | None) -> dict[str, Any]:
    """The test set as the job measured it (sha256, rows) and as launch pinned it (uri, object
    versions and ETags: the job's environment may have been too short to carry them)."""
    found = dict((summary or {}).get("data") or {})
    pinned = run.datasets.get("test")
    if pinned is not None:
        found["uri"] = pinned.uri
        found["objects"] = [o.model_dump() for o in pinned.objects]
        if len(pinned.objects) == 1:
            found["version_id"] = pinned.objects[0].version_id
            found["etag"] = pinned.objects[0].etag
    return found


def _summary_metrics(summary: dict[str, Any] | None) -> dict[str, float]:
    found = (summary or {}).get("metrics") or {}
    return {
        name: float(value)
        for name, value in found.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _summary_basis(summary: dict[str, Any] | None) -> ScoringBasis | None:
    """The basis the job reported (llm_sft.evaluation's summary), if it reported one."""
    if not summary:
        return None
    try:
        return ScoringBasis(
            dataset=summary["scored_on"],
            data_sha256=str(summary["data"]["sha256"]),
            tokenizer=str(summary["tokenizer"]["sha256"]),
            generation=summary.get("generation"),
        )
    except (KeyError, TypeError, ValueError):
        logger.warning("the job's evaluation summary names no scoring basis; using the pinned one")
        return None


#: The manifest the training job writes beside the model (llm_sft.serving_contract).
SERVING_CONTRACT_FILE = "serving_contract.json"


#: What the job's evaluation measured and on what (llm_sft.evaluation), beside the model.
EVALUATION_SUMMARY_FILE = "evaluation_summary.json"


def _model_file(s3: S3Client, model_uri: str, name: str) -> dict[str, Any] | None:
    """A JSON file the job writes beside the model: the serving contract (the training and
    serving stacks' versions), the evaluation summary."""
    bucket, _, prefix = model_uri.removeprefix("s3://").partition("/")
    key = f"{prefix.rstrip('/')}/{name}"
    return read_json_if_exists(s3, bucket, key)


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
    run: RunDocument,
    metrics: dict[str, float],
    contract: dict[str, Any] | None,
    basis: ScoringBasis | None = None,
) -> dict[str, str]:
    """CustomerMetadataProperties of the model package: lineage at a glance, the metric values
    later runs compare against, and the versions of both sides of the serving contract."""
    metadata = {
        "run_id": run.run_id,
        "training_job": current_job_name(run),
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
    metadata.update(basis_metadata(basis))
    assert set(metadata) <= set(PACKAGE_METADATA_KEYS), "keep PACKAGE_METADATA_KEYS complete"
    return metadata


def _failure_message(details: dict[str, Any]) -> str:
    error = details.get("error") or {}
    return f"{error.get('Error', 'Error')}: {error.get('Cause', '')}"


def _append_to_record(
    s3: S3Client,
    bucket: str,
    run: RunDocument,
    milestone: str | None,
    details: dict[str, Any],
    *,
    sagemaker: SageMakerClient | None = None,
    endpoint_change: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Add ``milestone`` to the run record; with ``sagemaker``, bring its account of the training
    attempts up to date too (record_run.attempts); add ``endpoint_change`` to its endpoint
    changes (record_run.endpoint_changes). No milestone: only the endpoint changed."""
    key = f"{RUNS_PREFIX}/{run.run_id}/run.json"
    record = read_json_if_exists(s3, bucket, key) or {
        "run_id": run.run_id,
        "run": run.to_state(),
        "milestones": [],
    }
    if sagemaker is not None:
        record["attempts"] = recorded_attempts(sagemaker, run, record.get("attempts", []))
    record["updated_at"] = now().isoformat()
    if milestone is not None:
        record["status"] = milestone
        record["milestones"].append({"milestone": milestone, "at": record["updated_at"], **details})
    if endpoint_change is not None:
        record.setdefault("endpoint_changes", []).append(endpoint_change)
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
