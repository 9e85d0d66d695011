"""Every path of the synthesized workflow, executed locally (moto's Step Functions interpreter)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from moto.sns.models import sns_backends

from tests.workflow.conftest import Workflow

HAPPY_PATH = [
    "Receive run request",
    "Validate and resolve run",
    "Train or deploy?",
    "Record run started",
    "Resume where?",
    "Train model",
    "Training completed?",
    "Record training and evaluation",
    "Passes evaluation gate?",
    "Register model",
    "Record registration",
    "Deploy?",
    "Create model",
    "Create endpoint config",
    "Find current endpoint",
    "Endpoint missing?",
    "Create endpoint",
    "Nothing to roll back to",
    "Start wait counter",
    "Wait for endpoint",
    "Check endpoint status",
    "Endpoint in service?",
    # SageMaker reports Creating for a while (the twin: one check): the bounded loop waits.
    "Count wait",
    "Store wait count",
    "Waited too long?",
    "Wait for endpoint",
    "Check endpoint status",
    "Endpoint in service?",
    "Smoke test endpoint",
    "Record deployment",
    "Record completion",
    "Notify run succeeded",
    "Run succeeded",
]
FAILURE_TAIL = [
    "Run resolved?",
    "Record failure",
    "Notify run failed",
    "Reserved error name?",
    "Run failed",
]
STEP_FAILURE_TAIL = [*FAILURE_TAIL[:-1], "Run failed in a step"]


def run_record(flow: Workflow, run_id: str) -> dict[str, Any]:
    body = flow.client("s3").get_object(
        Bucket=flow.platform.artifacts_bucket, Key=f"runs/{run_id}/run.json"
    )["Body"]
    return json.loads(body.read())


def notifications(flow: Workflow) -> list[str]:
    topic = sns_backends["123456789012"]["us-east-1"].topics[flow.platform.topic_arn]
    return [message for _, message, *_ in topic.sent_notifications]


def packages(flow: Workflow) -> list[dict[str, Any]]:
    sagemaker = flow.client("sagemaker")
    summaries = sagemaker.list_model_packages(
        ModelPackageGroupName=flow.platform.model_package_group
    )["ModelPackageSummaryList"]
    return [
        sagemaker.describe_model_package(ModelPackageName=s["ModelPackageArn"]) for s in summaries
    ]


def test_happy_path_trains_records_registers_deploys_and_notifies(workflow: Workflow) -> None:
    result = workflow.run(workflow.base_request(deployment={"enabled": True}))

    assert result.status == "SUCCEEDED", result.cause
    assert result.states == HAPPY_PATH
    assert result.output is not None
    run = result.output["run"]
    run_id = run["run_id"]

    (job,) = workflow.training.jobs
    assert job["TrainingJobName"] == f"llmft-local-{run_id}-a1"
    assert job["EnableManagedSpotTraining"] is True
    assert (
        job["StoppingCondition"]["MaxWaitTimeInSeconds"]
        > job["StoppingCondition"]["MaxRuntimeInSeconds"]
    )
    assert job["CheckpointConfig"]["S3Uri"].endswith(f"/checkpoints/{run_id}/")
    assert job["ExperimentConfig"]["TrialName"] == run["trial_name"]
    assert job["Environment"]["FT_RUN_ID"] == run_id
    identity = json.loads(job["Environment"]["FT_DATASET_IDENTITY"])
    assert identity["train"]["version_id"] == run["datasets"]["train"]["objects"][0]["version_id"]
    assert identity["train"]["objects"] == 1
    assert "@sha256:" in job["AlgorithmSpecification"]["TrainingImage"]

    (package,) = packages(workflow)
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["CustomerMetadataProperties"]["eval_loss"] == "1.25"
    assert package["CustomerMetadataProperties"]["run_id"] == run_id

    endpoint = workflow.client("sagemaker").describe_endpoint(
        EndpointName=run["deployment"]["endpoint_name"]
    )
    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["EndpointConfigName"] == run["deployment"]["endpoint_config_name"]

    record = run_record(workflow, run_id)
    assert [m["milestone"] for m in record["milestones"]] == [
        "started",
        "trained",
        "registered",
        "deployed",
        "completed",
    ]
    summary = json.loads(notifications(workflow)[-1])
    assert summary["status"] == "completed"
    assert summary["metrics"]["eval_loss"] == 1.25
    assert summary["endpoint_name"] == run["deployment"]["endpoint_name"]


def test_run_is_recorded_in_sagemaker_experiments(workflow: Workflow) -> None:
    result = workflow.run(workflow.base_request())
    assert result.status == "SUCCEEDED", result.cause
    run = result.output["run"]  # type: ignore[index]
    sagemaker = workflow.client("sagemaker")

    trial = sagemaker.describe_trial(TrialName=run["trial_name"])
    assert trial["ExperimentName"] == "llmft-local-tests"
    components = sagemaker.list_trial_components(TrialName=run["trial_name"])[
        "TrialComponentSummaries"
    ]
    names = {c["TrialComponentName"] for c in components}
    job = run["attempt"]["training_job_name"]
    assert names == {f"{run['trial_name']}-run", f"{job}-aws-training-job"}

    component = sagemaker.describe_trial_component(TrialComponentName=f"{run['trial_name']}-run")
    assert component["Status"]["PrimaryStatus"] == "Completed"
    assert component["Parameters"]["eval_loss"]["NumberValue"] == 1.25
    assert component["Parameters"]["gate_passed"]["StringValue"] == "true"
    assert "?versionId=" in component["InputArtifacts"]["dataset-train"]["Value"]
    assert "@sha256:" in component["InputArtifacts"]["training-image"]["Value"]
    assert component["OutputArtifacts"]["model_package"]["Value"].startswith("arn:aws:sagemaker")


def test_training_failure_ends_the_run_with_its_reason(workflow: Workflow) -> None:
    workflow.training.failure_reason = "CUDA out of memory: tried to allocate 2.00 GiB"

    result = workflow.run(workflow.base_request(deployment={"enabled": True}))

    assert result.status == "FAILED"
    assert result.states[-5:] == STEP_FAILURE_TAIL
    assert "Register model" not in result.states
    assert result.error == "RunFailed"
    assert result.cause is not None
    error, _, job = result.cause.partition(": ")
    assert error == "States.TaskFailed"
    assert json.loads(job)["FailureReason"].startswith("CUDA out of memory")
    assert packages(workflow) == []
    run_id = workflow.training.jobs[0]["Environment"]["FT_RUN_ID"]
    record = run_record(workflow, run_id)
    assert record["status"] == "failed"
    assert "CUDA out of memory" in record["milestones"][-1]["error"]["Cause"]
    assert "failed" in notifications(workflow)[-1]


@pytest.mark.parametrize(
    ("evaluation", "reason"),
    [
        ({"threshold": 1.0}, "above the threshold"),
        ({"metric": "perplexity", "threshold": 2.0}, "above the threshold"),
    ],
)
def test_gate_rejection_registers_and_deploys_nothing(
    workflow: Workflow, evaluation: dict[str, Any], reason: str
) -> None:
    result = workflow.run(
        workflow.base_request(evaluation=evaluation, deployment={"enabled": True})
    )

    assert result.status == "SUCCEEDED"
    assert result.states[-4:] == [
        "Passes evaluation gate?",
        "Record gate rejection",
        "Notify gate rejection",
        "Rejected by evaluation gate",
    ]
    assert packages(workflow) == []
    assert workflow.endpoints.deployed == []
    summary = json.loads(notifications(workflow)[-1])
    assert summary["status"] == "rejected"
    assert reason in summary["gate"]["reason"]


def test_gate_compares_with_the_best_approved_model(workflow: Workflow) -> None:
    first = workflow.run(workflow.base_request(run_name="baseline"))
    assert first.status == "SUCCEEDED"
    workflow.training.metrics = {"eval_loss": 1.30, "perplexity": 3.67}

    second = workflow.run(
        workflow.base_request(run_name="worse", evaluation={"must_beat_best_approved": True})
    )

    assert second.states[-1] == "Rejected by evaluation gate"
    assert len(packages(workflow)) == 1
    workflow.training.metrics = {"eval_loss": 1.10, "perplexity": 3.0}
    third = workflow.run(
        workflow.base_request(run_name="better", evaluation={"must_beat_best_approved": True})
    )
    assert third.states[-1] == "Run succeeded"
    assert len(packages(workflow)) == 2


def test_failed_endpoint_update_is_rolled_back_by_sagemaker(workflow: Workflow) -> None:
    deployment = {"enabled": True, "endpoint_name": "chat"}
    first = workflow.run(workflow.base_request(run_name="v1", deployment=deployment))
    assert first.status == "SUCCEEDED", first.cause
    previous_config = first.output["run"]["deployment"]["endpoint_config_name"]  # type: ignore[index]
    workflow.endpoints.failing_configs.add("llmft-local-v2")

    second = workflow.run(workflow.base_request(run_name="v2", deployment=deployment))

    # SageMaker rolls a failed update back itself: the endpoint serves the previous config.
    assert second.status == "FAILED"
    assert second.error == "EndpointUpdateFailed"
    assert "Update rolled back by SageMaker" in second.states
    assert "Restore previous endpoint config" not in second.states
    assert second.states[-5:] == FAILURE_TAIL
    endpoint = workflow.client("sagemaker").describe_endpoint(EndpointName="llmft-local-chat")
    assert endpoint["EndpointConfigName"] == previous_config
    assert endpoint["EndpointStatus"] == "InService"


def test_failed_smoke_test_on_an_update_restores_and_waits_for_the_previous_config(
    workflow: Workflow,
) -> None:
    deployment = {"enabled": True, "endpoint_name": "chat"}
    first = workflow.run(workflow.base_request(run_name="v1", deployment=deployment))
    assert first.status == "SUCCEEDED"
    previous_config = first.output["run"]["deployment"]["endpoint_config_name"]  # type: ignore[index]
    workflow.endpoints.broken_answers.add("llmft-local-chat")

    result = workflow.run(workflow.base_request(run_name="v2", deployment=deployment))

    assert result.status == "FAILED"
    assert result.error == "SmokeTestFailed"
    restore = result.states.index("Restore previous endpoint config")
    # The endpoint had settled (smoke tests run on an endpoint in service): restored at once.
    assert result.states[restore - 4 : restore] == [
        "Start rollback wait counter",
        "Check endpoint before rollback",
        "Endpoint settled?",
        "Previous config to restore?",
    ]
    # Updating (one check in the twin), then in service on the previous config.
    assert result.states[restore + 1 : restore + 5] == [
        "Start restore wait counter",
        "Wait for restored endpoint",
        "Check restored endpoint",
        "Restored endpoint in service?",
    ]
    assert "Previous config serves again" in result.states[restore:]
    assert workflow.endpoints.serving["llmft-local-chat"] == previous_config
    record = run_record(workflow, "v2")
    error = record["milestones"][-1]["error"]
    assert error["Error"] == "SmokeTestFailed"
    assert error["rollback"] == {"outcome": "restored", "endpoint_config": previous_config}


def test_a_model_that_computes_something_else_is_rolled_back(workflow: Workflow) -> None:
    workflow.endpoints.misreading.add("llmft-local-read")

    result = workflow.run(
        workflow.base_request(
            run_name="misread", deployment={"enabled": True, "endpoint_name": "read"}
        )
    )

    assert result.error == "SmokeTestFailed"
    assert "computes another model than training" in result.cause_json()["errorMessage"]
    assert workflow.endpoints.deleted == ["llmft-local-read"]


def test_failed_new_endpoint_is_deleted_recorded_and_notified(workflow: Workflow) -> None:
    workflow.endpoints.failing_configs.add("llmft-local-fresh")

    result = workflow.run(
        workflow.base_request(
            run_name="fresh", deployment={"enabled": True, "endpoint_name": "new"}
        )
    )

    # AWS fails a Choice on a missing path with States.Runtime, which nothing catches: the
    # rollback plan is always written, so the cleanup path runs to the end.
    assert result.status == "FAILED"
    assert result.error == "EndpointFailed"
    assert "Delete failed endpoint" in result.states
    assert result.states[-5:] == FAILURE_TAIL
    assert workflow.endpoints.deleted == ["llmft-local-new"]
    record = run_record(workflow, "fresh")
    assert record["status"] == "failed"
    assert record["milestones"][-1]["error"]["rollback"] == {"outcome": "deleted"}
    assert "EndpointFailed" in notifications(workflow)[-1]


@pytest.mark.parametrize("slow_endpoints", [3], indirect=True)
def test_a_wait_that_times_out_deletes_the_endpoint_once_it_has_settled(
    slow_endpoints: Workflow,
) -> None:
    """SageMaker refuses to delete an endpoint still Creating: the rollback waits for it."""
    flow = slow_endpoints
    result = flow.run(
        flow.base_request(run_name="slow", deployment={"enabled": True, "endpoint_name": "slow"})
    )

    assert result.error == "EndpointWaitTimedOut"
    timed_out = result.states.index("Endpoint wait timed out")
    assert result.states[timed_out + 1 :].count("Check endpoint before rollback") == 2
    assert "Failed endpoint deleted" in result.states
    assert flow.endpoints.deleted == ["llmft-local-slow"]
    record = run_record(flow, "slow")
    assert record["milestones"][-1]["error"]["rollback"] == {"outcome": "deleted"}


@pytest.mark.parametrize("slow_endpoints", [10], indirect=True)
def test_an_endpoint_that_never_settles_is_reported_for_a_person(slow_endpoints: Workflow) -> None:
    flow = slow_endpoints
    result = flow.run(
        flow.base_request(run_name="stuck", deployment={"enabled": True, "endpoint_name": "stuck"})
    )

    assert result.error == "EndpointWaitTimedOut"
    assert "Rollback blocked" in result.states
    assert "Delete failed endpoint" not in result.states  # SageMaker would refuse it
    rollback = run_record(flow, "stuck")["milestones"][-1]["error"]["rollback"]
    assert rollback["outcome"] == "endpoint still in transition: roll it back by hand"
    assert rollback["status"] == "Creating"
    assert "EndpointWaitTimedOut" in notifications(flow)[-1]


def test_update_rollback_failure_stops_waiting_at_once(workflow: Workflow) -> None:
    deployment = {"enabled": True, "endpoint_name": "chat"}
    assert workflow.run(workflow.base_request(run_name="v1", deployment=deployment)).status == (
        "SUCCEEDED"
    )
    workflow.endpoints.update_outcomes["llmft-local-v2"] = "UpdateRollbackFailed"

    result = workflow.run(workflow.base_request(run_name="v2", deployment=deployment))

    assert result.error == "EndpointUnusable"
    # One check sees Updating, the next the outcome: no wait after it.
    assert result.states.count("Check endpoint status") == 2
    assert result.states[result.states.index("Endpoint unusable") - 1] == "Endpoint in service?"
    assert "UpdateRollbackFailed" in (result.cause or "")


@pytest.mark.parametrize("stopped_jobs", ["succeed", "fail"])
def test_a_stopped_training_job_is_never_registered(
    local_templates: Any, mlflow_store: str, stopped_jobs: str
) -> None:
    from tests.workflow.conftest import _workflow

    for flow in _workflow(local_templates, mlflow_store, stopped_jobs=stopped_jobs):
        flow.training.status = "Stopped"
        result = flow.run(flow.base_request(run_name="stopped", deployment={"enabled": True}))

        assert result.status == "FAILED"
        assert "Register model" not in result.states
        assert packages(flow) == []
        assert run_record(flow, "stopped")["status"] == "failed"
        if stopped_jobs == "succeed":
            assert result.error == "TrainingNotCompleted"
            assert "ended Stopped" in (result.cause or "")


def test_an_endpoint_lookup_error_is_not_taken_for_a_missing_endpoint(workflow: Workflow) -> None:
    workflow.faults.faults["Find current endpoint"] = (
        "SageMaker.SageMakerException",
        "Rate exceeded (Service: SageMaker, Status Code: 400, Request ID: x)",
    )

    result = workflow.run(workflow.base_request(run_name="throttled", deployment={"enabled": True}))

    assert result.error == "SageMaker.SageMakerException"
    assert "Endpoint lookup failed" in result.states
    assert "Create endpoint" not in result.states
    assert workflow.endpoints.deployed == []


def test_bad_request_fails_in_launch_naming_the_field_and_starts_nothing(
    workflow: Workflow,
) -> None:
    result = workflow.run(
        workflow.base_request(training={"instance_type": "ml.t3.medium", "spot": "maybe"})
    )

    assert result.status == "FAILED"
    assert result.states == [
        "Receive run request",
        "Validate and resolve run",
        "Run resolved?",
        "Record invalid request",
        "Notify run failed",
        "Reserved error name?",
        "Run failed",
    ]
    assert result.error == "RunRequestInvalid"
    cause = result.cause_json()
    assert cause["errorType"] == "RunRequestInvalid"
    assert "training.spot" in cause["errorMessage"]
    assert workflow.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    assert workflow.training.jobs == []


def test_platform_rules_are_checked_before_anything_starts(workflow: Workflow) -> None:
    result = workflow.run(workflow.base_request(training={"instance_type": "ml.t3.medium"}))

    assert result.error == "RunRequestInvalid"
    assert (
        "training.instance_type: 'ml.t3.medium' is not allowed"
        in result.cause_json()["errorMessage"]
    )
    assert workflow.training.jobs == []


def test_missing_dataset_fails_in_launch(workflow: Workflow) -> None:
    request = workflow.base_request(
        dataset={"train": f"s3://{workflow.platform.datasets_bucket}/datasets/missing.jsonl"}
    )
    result = workflow.run(request)
    assert result.error == "RunRequestInvalid"
    assert "dataset.train:" in result.cause_json()["errorMessage"]
    assert "does not exist" in result.cause_json()["errorMessage"]


def test_pending_model_deploys_after_approval_with_a_deploy_request(
    pending_workflow: Workflow,
) -> None:
    flow = pending_workflow
    deployment = {"enabled": True, "endpoint_name": "reviewed"}
    trained = flow.run(flow.base_request(run_name="reviewed-run", deployment=deployment))
    assert trained.status == "SUCCEEDED"
    assert "Create model" not in trained.states
    (package,) = packages(flow)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"

    refused = flow.run({"deploy_run": "reviewed-run"})
    assert refused.error == "RunRequestInvalid"
    assert "is PendingManualApproval; approve it first" in refused.cause_json()["errorMessage"]

    # The approver may also rewrite the package's inference specification (no IAM condition
    # key covers it): a package pointed at another folder is not deployed.
    sagemaker = flow.client("sagemaker")
    specification = sagemaker.describe_model_package(ModelPackageName=package["ModelPackageArn"])[
        "InferenceSpecification"
    ]
    trained_source = specification["Containers"][0]["ModelDataSource"]["S3DataSource"]["S3Uri"]
    repointed = {
        **specification,
        "Containers": [
            {
                **specification["Containers"][0],
                "ModelDataSource": {
                    "S3DataSource": {
                        "S3Uri": trained_source.replace("reviewed-run", "other-run"),
                        "S3DataType": "S3Prefix",
                        "CompressionType": "None",
                    }
                },
            }
        ],
    }
    sagemaker.update_model_package(
        ModelPackageArn=package["ModelPackageArn"],
        ModelApprovalStatus="Approved",
        InferenceSpecification=repointed,
    )
    tampered = flow.run({"deploy_run": "reviewed-run"})
    assert tampered.error == "RunRequestInvalid"
    assert (
        "no longer points at the model the run trained" in (tampered.cause_json()["errorMessage"])
    )

    sagemaker.update_model_package(
        ModelPackageArn=package["ModelPackageArn"], InferenceSpecification=specification
    )
    deployed = flow.run({"deploy_run": "reviewed-run"})

    assert deployed.status == "SUCCEEDED", deployed.cause
    assert deployed.states[:5] == [
        "Receive run request",
        "Validate and resolve run",
        "Train or deploy?",
        "Use the registered model",
        "Create model",
    ]
    assert "Train model" not in deployed.states
    config = deployed.output["run"]["deployment"]["endpoint_config_name"]  # type: ignore[index]
    assert config.startswith("llmft-local-reviewed-run-")
    assert flow.endpoints.serving == {"llmft-local-reviewed": config}
    # Deploying the same run again creates a model and config of its own: SageMaker refuses
    # existing names.
    again = flow.run(
        {
            "deploy_run": "reviewed-run",
            "deployment": {
                "enabled": True,
                "endpoint_name": "reviewed",
                "initial_instance_count": 2,
            },
        }
    )
    assert again.status == "SUCCEEDED", again.cause
    assert flow.endpoints.serving["llmft-local-reviewed"] not in (config,)
    record = run_record(flow, "reviewed-run")
    assert [m["milestone"] for m in record["milestones"]][-2:] == ["deployed", "completed"]
