"""The synthesized workflow, executed in moto's Step Functions interpreter.

Lambda handlers run in-process; `.sync` training and endpoints are scripted per test (the
local-backend tests run real training). See finetune/local/moto_patches.py for why each moto
patch exists.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from finetune.local.emulator import MOTO_CONFIG, EmulatedPlatform, deploy_platform
from finetune.local.executions import ExecutionResult, wait_for_execution
from finetune.local.iam.twin import IamTwin
from finetune.local.mlflow_app import EmulatedMlflowApp
from finetune.local.moto_patches import FaultInjector, TrainingOutcome, patched_moto
from tests.infra.synth import Synthesized
from tests.report import report

#: What a scripted job writes as serving_reference.json (llm_sft.serving_reference's format) and
#: what a scripted endpoint computes for it, unless told to compute something else.
REFERENCE = {
    "format": 1,
    "source": "validation row 1",
    "held_out": True,
    "inputs": "<|user|>What is 2 + 3?<|assistant|>5",
    "input_ids": [1, 17, 4, 9, 23, 5],
    "token_logprobs": [None, -2.0, -1.5, -1.0, -0.5, -0.25],
    "target_positions": [4, 5],
    "loss": 0.375,
}


@dataclass
class ScriptedTraining:
    """Training jobs end as scripted: metrics, or a failure (or stop) with a reason. Completed
    jobs leave a model folder with its serving reference, as the training code does."""

    metrics: dict[str, float] = field(
        default_factory=lambda: {"eval_loss": 1.25, "perplexity": 3.49, "train_loss": 1.1}
    )
    failure_reason: str | None = None
    status: str = "Completed"
    jobs: list[dict[str, Any]] = field(default_factory=list)
    #: Outcomes of the next jobs, in order, before the scripted default (e.g. capacity errors).
    next_outcomes: list[TrainingOutcome] = field(default_factory=list)

    def __call__(self, parameters: dict[str, Any]) -> TrainingOutcome:
        self.jobs.append(parameters)
        if self.next_outcomes:
            return self.next_outcomes.pop(0)
        output = parameters["OutputDataConfig"]["S3OutputPath"]
        model = f"{output}{parameters['TrainingJobName']}/output/model/"
        if self.failure_reason is not None:
            return TrainingOutcome(status="Failed", failure_reason=self.failure_reason)
        bucket, _, prefix = model.removeprefix("s3://").partition("/")
        boto3.client("s3", region_name="us-east-1").put_object(
            Bucket=bucket, Key=f"{prefix}serving_reference.json", Body=json.dumps(REFERENCE)
        )
        return TrainingOutcome(
            status=self.status, metrics=dict(self.metrics), model_artifacts=model
        )


def of_run(config: str, names: Any) -> Any:
    """The entry of ``names`` for endpoint config ``config``: configs are named
    ``<prefix>-<run id>-<deployment id>``, tests script them by ``<prefix>-<run id>``."""
    for name in names:
        if config == name or config.startswith(f"{name}-"):
            return name
    return None


@dataclass
class ScriptedEndpoints:
    """Endpoints come up (or fail) as scripted per run (``<prefix>-<run id>``) and answer like
    TGI."""

    failing_configs: set[str] = field(default_factory=set)
    #: Run -> status a deployment of it ends in instead (e.g. UpdateRollbackFailed).
    update_outcomes: dict[str, str] = field(default_factory=dict)
    broken_answers: set[str] = field(default_factory=set)  # endpoint names answering garbage
    #: Endpoint names whose model computes another loss than training did.
    misreading: set[str] = field(default_factory=set)
    deployed: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    serving: dict[str, str] = field(default_factory=dict)

    def deploy(
        self, endpoint_name: str, endpoint_config: dict[str, Any], model: dict[str, Any]
    ) -> str:
        config = endpoint_config["EndpointConfigName"]
        self.deployed.append((endpoint_name, config))
        scripted = of_run(config, self.update_outcomes)
        if scripted is not None:
            return str(self.update_outcomes[scripted])
        if of_run(config, self.failing_configs) is not None:
            return "Failed"
        self.serving[endpoint_name] = config
        return "InService"

    def invoke(self, endpoint_name: str, body: bytes, content_type: str) -> bytes:
        if endpoint_name in self.broken_answers:
            return b"<html>502 Bad Gateway</html>"
        request = json.loads(body)
        answer: dict[str, Any] = {"generated_text": "Hello! Nice to meet you."}
        if request.get("parameters", {}).get("decoder_input_details"):
            shift = 2.0 if endpoint_name in self.misreading else 0.0
            answer["details"] = {
                "prefill": [
                    {"id": token, "text": "", "logprob": None if p is None else p - shift}
                    for token, p in zip(
                        REFERENCE["input_ids"], REFERENCE["token_logprobs"], strict=True
                    )
                ]
            }
        return json.dumps([answer]).encode()

    def delete(self, endpoint_name: str) -> None:
        self.deleted.append(endpoint_name)
        self.serving.pop(endpoint_name, None)


@dataclass
class Workflow:
    platform: EmulatedPlatform
    training: ScriptedTraining
    endpoints: ScriptedEndpoints
    faults: FaultInjector
    iam: IamTwin

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name="us-east-1")

    def put_dataset(self, key: str, lines: list[dict[str, Any]]) -> str:
        body = "".join(json.dumps(line) + "\n" for line in lines).encode()
        self.client("s3").put_object(Bucket=self.platform.datasets_bucket, Key=key, Body=body)
        return f"s3://{self.platform.datasets_bucket}/{key}"

    def run(self, request: dict[str, Any], *, name: str | None = None) -> ExecutionResult:
        sfn = self.client("stepfunctions")
        started = sfn.start_execution(
            stateMachineArn=self.platform.state_machine_arn,
            input=json.dumps(request),
            # The console names executions with a UUID (moto would use "None").
            name=name or str(uuid.uuid4()),
        )
        return wait_for_execution(sfn, started["executionArn"], timeout_seconds=120)

    def base_request(self, **changes: Any) -> dict[str, Any]:
        request: dict[str, Any] = {
            "experiment_name": "tests",
            "base_model": f"s3://{self.platform.datasets_bucket}/base-models/tiny/",
            "model_parameters_billions": 0.01,
            "dataset": {
                "train": f"s3://{self.platform.datasets_bucket}/datasets/chat/train.jsonl",
                "validation": f"s3://{self.platform.datasets_bucket}/datasets/chat/validation.jsonl",
            },
        }
        request.update(changes)
        return request


CHAT = [
    {
        "messages": [
            {"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "5"},
        ]
    }
]


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store per test process (creating one takes seconds): the emulated MLflow App
    writes what the record function sends it there."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _workflow(
    synthesized: Synthesized,
    mlflow_store: str,
    *,
    stopped_jobs: str = "succeed",
    transition_checks: int = 1,
    **overrides: str,
) -> Iterator[Workflow]:
    training = ScriptedTraining()
    endpoints = ScriptedEndpoints()
    faults = FaultInjector()
    iam = IamTwin()
    with (
        mock_aws(config=MOTO_CONFIG),
        patched_moto(
            training_runner=training,
            endpoint_host=endpoints,
            faults=faults,
            principals=iam,
            stopped_jobs=stopped_jobs,  # type: ignore[arg-type]
            endpoint_transition_checks=transition_checks,
        ),
    ):
        platform = deploy_platform(
            synthesized.templates,
            # Endpoint checks every 0 s instead of 60 s, capacity retries after 0 s instead of
            # 15 minutes; the loops are the same.
            function_environment_overrides={
                "FT_ENDPOINT_POLL_SECONDS": "0",
                "FT_TRAINING_CAPACITY_BACKOFF_SECONDS": "0",
                **overrides,
            },
        )
        iam.load(platform.intrinsics)
        app = platform.mlflow_app_arn
        assert app is not None  # the local config tracks runs in MLflow
        mlflow = EmulatedMlflowApp(app, mlflow_store, principals=iam)
        flow = Workflow(platform, training, endpoints, faults, iam)
        flow.put_dataset("datasets/chat/train.jsonl", CHAT * 4)
        flow.put_dataset("datasets/chat/validation.jsonl", CHAT)
        flow.put_dataset("base-models/tiny/config.json", [{"model_type": "llama"}])
        with mlflow.installed():
            yield flow
        # Every call every principal made was evaluated against the synthesized policies: a
        # refusal here is a call AWS would refuse (the failure names principal, action and
        # resource).
        iam.service_deliveries()  # alarm -> topic, as cloudwatch.amazonaws.com
        report_coverage(iam)
        assert [str(d) for d in iam.denials] == []


def report_coverage(iam: IamTwin) -> None:
    for principal, actions in iam.coverage().items():
        for action, count in actions.items():
            report("IAM evaluation", f"{principal} | {action}", count)


@pytest.fixture
def workflow(local_templates: Synthesized, mlflow_store: str) -> Iterator[Workflow]:
    """The local platform: models are approved on registration."""
    yield from _workflow(local_templates, mlflow_store)


@pytest.fixture
def slow_endpoints(
    local_templates: Synthesized, mlflow_store: str, request: pytest.FixtureRequest
) -> Iterator[Workflow]:
    """Endpoints stay Creating/Updating for ``request.param`` checks; the workflow gives up after
    two (FT_ENDPOINT_MAX_POLLS=2)."""
    yield from _workflow(
        local_templates, mlflow_store, transition_checks=request.param, FT_ENDPOINT_MAX_POLLS="2"
    )


@pytest.fixture
def pending_workflow(local_templates: Synthesized, mlflow_store: str) -> Iterator[Workflow]:
    """As on a governed account: registered models wait for manual approval."""
    yield from _workflow(
        local_templates, mlflow_store, FT_MODEL_APPROVAL_STATUS="PendingManualApproval"
    )
