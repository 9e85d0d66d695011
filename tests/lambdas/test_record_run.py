"""Record logic against moto: Experiments lineage, run records, gate inputs, summaries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from launch_run.logic import resolve_run
from record_run.logic import Clients, best_approved_metric, decide_gate, record_milestone
from runspec.request import Evaluation
from runspec.run import RunDocument
from tests.lambdas.conftest import Aws


@pytest.fixture
def run(aws: Aws) -> RunDocument:
    return resolve_run(
        {"experiment_name": "chat", "evaluation": {"threshold": 2.0}},
        aws.settings,
        execution_name=None,
        s3=aws.client("s3"),
        ecr=aws.client("ecr"),
    )


def record(aws: Aws, milestone: str, run: RunDocument | None, **details: Any) -> dict[str, Any]:
    return record_milestone(
        Clients(sagemaker=aws.client("sagemaker"), s3=aws.client("s3")),
        artifacts_bucket=aws.settings.artifacts_bucket,
        milestone=milestone,  # type: ignore[arg-type]
        run=run,
        details=details,
        execution_name="exec-1",
    )


def create_job(aws: Aws, run: RunDocument, metrics: dict[str, float]) -> None:
    from moto.sagemaker.models import sagemaker_backends

    aws.client("sagemaker").create_training_job(
        TrainingJobName=run.attempt.training_job_name,
        AlgorithmSpecification={
            "TrainingImage": run.training.image_uri,
            "TrainingInputMode": "File",
        },
        RoleArn="arn:aws:iam::123456789012:role/training",
        OutputDataConfig={"S3OutputPath": run.training.output_path},
        ResourceConfig={"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    job = sagemaker_backends["123456789012"]["us-east-1"].training_jobs[
        run.attempt.training_job_name
    ]
    job.final_metric_data_list = [
        {"MetricName": k, "Value": v, "Timestamp": job.creation_time} for k, v in metrics.items()
    ]


def test_started_creates_experiment_trial_and_run_component_idempotently(
    aws: Aws, run: RunDocument
) -> None:
    record(aws, "started", run)
    record(aws, "started", run)  # a retried state must not fail

    sagemaker = aws.client("sagemaker")
    assert sagemaker.describe_experiment(ExperimentName="llmft-test-chat")["ExperimentName"]
    trial = sagemaker.describe_trial(TrialName=run.trial_name)
    assert trial["ExperimentName"] == "llmft-test-chat"
    component = sagemaker.describe_trial_component(TrialComponentName=f"{run.trial_name}-run")
    assert component["Parameters"]["instance_type"]["StringValue"] == "ml.g5.2xlarge"
    assert component["InputArtifacts"]["dataset-train"]["Value"].startswith(
        "s3://llmft-test-datasets/datasets/default/train.jsonl?versionId="
    )


def test_trained_returns_metrics_and_gate_inputs(aws: Aws, run: RunDocument) -> None:
    record(aws, "started", run)
    create_job(aws, run, {"eval_loss": 1.5, "perplexity": 4.48, "train_loss": 1.2})

    model = f"s3://{aws.settings.artifacts_bucket}/models/{run.run_id}/job/output/model/"
    result = record(aws, "trained", run, training={"model_artifacts": model})

    assert result["metrics"] == {"eval_loss": 1.5, "perplexity": 4.48, "train_loss": 1.2}
    evaluation = result["evaluation"]
    assert evaluation["value"] == 1.5
    assert evaluation["threshold"] == 2.0
    assert evaluation["passed"] is True
    assert result["package_metadata"]["eval_loss"] == "1.5"
    body = aws.client("s3").get_object(
        Bucket=aws.settings.artifacts_bucket, Key=f"runs/{run.run_id}/evaluation.json"
    )["Body"]
    assert json.loads(body.read())["metrics"]["perplexity"] == 4.48


def test_best_approved_considers_only_approved_packages(aws: Aws) -> None:
    sagemaker = aws.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName="g")
    for status, loss in (("Approved", "1.4"), ("Rejected", "0.9"), ("Approved", "1.2")):
        sagemaker.create_model_package(
            ModelPackageGroupName="g",
            ModelApprovalStatus=status,
            CustomerMetadataProperties={"eval_loss": loss},
        )
    value, arn = best_approved_metric(sagemaker, "g", "eval_loss")
    assert value == 1.2
    assert arn is not None


@pytest.mark.parametrize(
    ("gate", "value", "best", "passed", "reason"),
    [
        ({}, None, None, False, "reported no eval_loss"),
        ({"threshold": 2.0}, 2.5, None, False, "above the threshold 2"),
        ({"threshold": 2.0}, 2.0, None, True, "eval_loss 2 passed"),
        ({"must_beat_best_approved": True}, 1.3, 1.3, False, "does not beat the best approved"),
        ({"must_beat_best_approved": True}, 1.2, 1.3, True, "passed"),
        ({"must_beat_best_approved": True}, 1.2, None, True, "passed"),
        ({"metric": "perplexity", "threshold": 4.0}, 3.0, None, True, "perplexity 3 passed"),
    ],
)
def test_the_gate_is_decided_once_with_its_reason(
    gate: dict[str, Any], value: float | None, best: float | None, passed: bool, reason: str
) -> None:
    decision = decide_gate(Evaluation(**gate), value, best_approved_value=best)
    assert decision.passed is passed
    assert reason in decision.reason


def test_failure_before_a_run_exists_is_kept_by_execution_name(aws: Aws) -> None:
    result = record(aws, "failed", None, error={"Error": "RunRequestInvalid", "Cause": "x"})
    assert result["status"] == "failed"
    body = aws.client("s3").get_object(
        Bucket=aws.settings.artifacts_bucket, Key="runs/_invalid/exec-1.json"
    )["Body"]
    assert json.loads(body.read())["error"]["Error"] == "RunRequestInvalid"


def test_failed_run_is_closed_with_its_cause_and_summarised(aws: Aws, run: RunDocument) -> None:
    record(aws, "started", run)
    summary = record(
        aws, "failed", run, error={"Error": "States.TaskFailed", "Cause": "out of memory"}
    )
    assert summary["status"] == "failed"
    assert summary["error"]["Cause"] == "out of memory"
    component = aws.client("sagemaker").describe_trial_component(
        TrialComponentName=f"{run.trial_name}-run"
    )
    assert component["Status"]["PrimaryStatus"] == "Failed"
    assert "out of memory" in component["Status"]["Message"]


def test_the_run_and_its_package_state_both_sides_of_the_serving_contract(
    aws: Aws, run: RunDocument
) -> None:
    """Issue 16: which training stack wrote the model and which serving stack reads it."""
    record(aws, "started", run)
    create_job(aws, run, {"eval_loss": 1.5})
    model = f"s3://{aws.settings.artifacts_bucket}/models/{run.run_id}/job/output/model/"
    manifest = {
        "contract_version": 1,
        "training_stack": {"transformers": "5.23.0", "tokenizers": "0.23.3", "torch": "2.13.0"},
        "serving_stack": {
            "image": "huggingface-pytorch-tgi-inference:2.7.0-tgi3.3.6",
            "server_version": "3.3.6",
            "packages": {"transformers": "4.51.0", "tokenizers": "0.21.0"},
        },
        "conversions": ["rope_theta"],
    }
    aws.put(
        f"models/{run.run_id}/job/output/model/serving_contract.json",
        json.dumps(manifest),
        bucket=aws.settings.artifacts_bucket,
    )

    result = record(aws, "trained", run, training={"model_artifacts": model})

    metadata = result["package_metadata"]
    assert metadata["serving_image"] == "huggingface-pytorch-tgi-inference:2.7.0-tgi3.3.6"
    assert metadata["serving_transformers"] == "4.51.0"
    assert metadata["training_transformers"] == "5.23.0"
    assert metadata["serving_contract"] == "1"
    saved = json.loads(
        aws.client("s3")
        .get_object(Bucket=aws.settings.artifacts_bucket, Key=f"runs/{run.run_id}/run.json")["Body"]
        .read()
    )
    assert saved["milestones"][-1]["serving_contract"]["serving_stack"]["server_version"] == "3.3.6"


def test_a_model_without_a_serving_contract_says_so(aws: Aws, run: RunDocument) -> None:
    record(aws, "started", run)
    create_job(aws, run, {"eval_loss": 1.5})
    model = f"s3://{aws.settings.artifacts_bucket}/models/{run.run_id}/job/output/model/"
    result = record(aws, "trained", run, training={"model_artifacts": model})
    assert result["serving_contract"] is None
    assert "serving_image" not in result["package_metadata"]
