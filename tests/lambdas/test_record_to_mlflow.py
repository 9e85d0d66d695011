"""The record function adds a run's later facts to its MLflow run: MLflow's REST API, signed for
the MLflow App, answered by the emulated App (local store, IAM evaluated, MLflow's messages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials

from finetune.local.iam.twin import IamTwin
from finetune.local.mlflow_app import EmulatedMlflowApp
from launch_run.logic import resolve_run
from record_run.logic import Clients, record_milestone
from record_run.mlflow_rest import MlflowRest, endpoint_for
from runspec.run import RunDocument
from tests.lambdas.conftest import Aws
from tests.lambdas.test_record_run import create_job

APP = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-0123456789ab"
RECORD_ROLE = "arn:aws:iam::123456789012:role/record"


def test_endpoints_signing_and_headers_follow_the_sagemaker_mlflow_plugin() -> None:
    app = endpoint_for(APP)
    assert app.url == "https://mlflow.sagemaker.us-east-1.app.aws"
    assert (app.signing_service, app.headers) == ("sagemaker", {"x-sm-mlflow-app-arn": APP})
    server = endpoint_for("arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/t")
    assert server.url == "https://eu-west-1.experiments.sagemaker.aws"
    assert server.signing_service == "sagemaker-mlflow"


def _twin(*, granted: bool) -> IamTwin:
    twin = IamTwin()
    statement = {"Effect": "Allow", "Action": "sagemaker:CallMlflowAppApi", "Resource": APP}
    document = {"Version": "2012-10-17", "Statement": [statement] if granted else []}
    twin.policies.roles = {RECORD_ROLE: [document]}
    twin.loaded = True
    return twin


@pytest.fixture
def run(aws: Aws) -> RunDocument:
    return resolve_run(
        {"experiment_name": "chat", "evaluation": {"threshold": 2.0}},
        aws.settings,
        execution_name=None,
        s3=aws.client("s3"),
        ecr=aws.client("ecr"),
    )


def _milestones(aws: Aws, run: RunDocument, twin: IamTwin, store: str) -> tuple[Any, Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store)
    experiment = client.create_experiment(run.experiment_name)
    mlflow_run = client.create_run(experiment, tags={"run_id": run.run_id}).info.run_id
    clients = Clients(
        sagemaker=aws.client("sagemaker"),
        s3=aws.client("s3"),
        mlflow=MlflowRest(APP, credentials=Credentials("AKIDEXAMPLE", "secret")),
    )
    app = EmulatedMlflowApp(APP, store, principals=twin)

    def record(milestone: str, **details: Any) -> dict[str, Any]:
        with twin.acting_as(RECORD_ROLE):
            return record_milestone(
                clients,
                artifacts_bucket=aws.settings.artifacts_bucket,
                milestone=milestone,  # type: ignore[arg-type]
                run=run,
                details=details,
            )

    with app.installed():
        record("started")
        create_job(aws, run, {"eval_loss": 1.5, "perplexity": 4.48})
        model = f"s3://{aws.settings.artifacts_bucket}/models/{run.run_id}/job/output/model/"
        record("trained", training={"model_artifacts": model})
        record("registered", model_package_arn="arn:aws:sagemaker:us-east-1:1:model-package/g/1")
        record("deployed", endpoint_name="llmft-test-chat")
        record("completed", summary="done")
    return client.get_run(mlflow_run), app


def test_gate_package_endpoint_and_status_reach_the_job_s_mlflow_run(
    aws: Aws, run: RunDocument, tmp_path: Path
) -> None:
    twin = _twin(granted=True)
    found, app = _milestones(aws, run, twin, f"sqlite:///{tmp_path / 'mlflow.db'}")

    tags, metrics = found.data.tags, found.data.metrics
    assert tags["gate.passed"] == "true"
    assert "eval_loss 1.5 passed the gate" in tags["gate.reason"]
    assert tags["gate.rules"] == '["eval_loss <= 2"]'
    assert tags["scored.dataset"] == "validation"
    assert tags["image.digest"] == run.image.digest
    assert tags["model_package.arn"].endswith("model-package/g/1")
    assert tags["model_package.approval"] == "PendingManualApproval"
    assert tags["endpoint.name"] == "llmft-test-chat"
    assert tags["platform.status"] == "completed"
    assert metrics["gate_passed"] == 1.0
    # The run was found by its run_id tag (no summary named it), then updated.
    assert app.calls[:3] == ["GetExperimentByName", "SearchRuns", "LogBatch"]
    assert twin.evaluated[(RECORD_ROLE, "sagemaker:CallMlflowAppApi")] == len(app.calls)
    assert twin.denials == []


def test_a_record_role_without_the_grant_is_refused_and_the_run_goes_on(
    aws: Aws, run: RunDocument, tmp_path: Path
) -> None:
    twin = _twin(granted=False)
    found, app = _milestones(aws, run, twin, f"sqlite:///{tmp_path / 'mlflow.db'}")

    assert app.calls == []
    assert "gate.passed" not in found.data.tags
    assert {d.action for d in twin.denials} == {"sagemaker:CallMlflowAppApi"}
