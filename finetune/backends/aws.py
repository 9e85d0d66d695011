"""The AWS backend: the deployed stacks, found by their names in the chosen environment."""

from __future__ import annotations

import json
from typing import Any

import boto3

from finetune.backends.base import ExecutionOutcome, Reporter
from finetune.backends.common import (
    deploy_document,
    follow_execution,
    model_package_of,
    outcome_of,
    progress_for,
    start,
    summary_of,
)
from finetune.endpoints import EndpointRow, list_endpoints
from finetune.errors import EXIT_USAGE, CliError
from finetune.progress import RunProgress
from runspec.settings import PlatformSettings
from stacks.config import PlatformConfig

__all__ = ["AwsBackend"]

_POLL_SECONDS = 10.0


class AwsBackend:
    name = "aws"

    def __init__(
        self,
        config: PlatformConfig,
        session: boto3.Session | None = None,
        *,
        poll_seconds: float = _POLL_SECONDS,
    ) -> None:
        self.config = config
        self.session = session or boto3.Session(region_name=config.region)
        self.poll_seconds = poll_seconds
        self._outputs: dict[str, str] | None = None
        self._settings: PlatformSettings | None = None

    def client(self, service: str) -> Any:
        return self.session.client(service)

    # -- discovery ---------------------------------------------------------------------------

    def outputs(self) -> dict[str, str]:
        """Outputs of the deployed data and workflow stacks (by stack name)."""
        if self._outputs is None:
            cloudformation = self.client("cloudformation")
            outputs: dict[str, str] = {}
            for part in ("data", "workflow"):
                name = self.config.stack_name(part)
                try:
                    (stack,) = cloudformation.describe_stacks(StackName=name)["Stacks"]
                except cloudformation.exceptions.ClientError:
                    raise CliError(
                        f"stack {name} is not deployed in this account and region",
                        hint=f"deploy it (make deploy ENV={self.config.env_name}) or use --local",
                    ) from None
                outputs.update({o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])})
            self._outputs = outputs
        return self._outputs

    def settings(self) -> PlatformSettings:
        """The launch function's own settings: the CLI validates exactly as it does."""
        if self._settings is None:
            configuration = self.client("lambda").get_function_configuration(
                FunctionName=self.outputs()["LaunchFunctionName"]
            )
            self._settings = PlatformSettings.from_env(configuration["Environment"]["Variables"])
        return self._settings

    # -- commands ----------------------------------------------------------------------------

    def launch(
        self, document: dict[str, Any], *, reporter: Reporter, wait: bool, serve: bool
    ) -> ExecutionOutcome:
        started = start(self._pinned(document), self.settings(), self.client)
        verb = "started" if started["started"] else "already started"
        reporter.message(f"run {started['run_id']}: {verb} ({started['execution_arn']})")
        if not wait:
            return ExecutionOutcome(
                run_id=started["run_id"],
                execution_name=started["execution_arn"].rsplit(":", 1)[1],
                status=started.get("status", "RUNNING"),
                started=started["started"],
            )
        return self._follow(
            started["execution_arn"], started["run_id"], progress_for(document), reporter
        )

    def _pinned(self, document: dict[str, Any]) -> dict[str, Any]:
        """A JumpStart base model resolved in this region with the SageMaker SDK (the launch
        function has no SDK and requires the pin: finetune.base_models)."""
        from finetune.base_models import JumpStartError, pin_base_model

        try:
            return pin_base_model(document, region=self.session.region_name)
        except JumpStartError as error:
            raise CliError(str(error), exit_code=EXIT_USAGE) from None

    def _follow(
        self, execution_arn: str, run_id: str, progress: RunProgress, reporter: Reporter
    ) -> ExecutionOutcome:
        logs = _TrainingLogTail(self.client("logs"), f"{self.config.prefix}-{run_id}", progress)
        description = follow_execution(
            self.client("stepfunctions"),
            execution_arn,
            progress=progress,
            reporter=reporter,
            poll_seconds=self.poll_seconds,
            on_poll=logs.poll,
        )
        return outcome_of(description, progress, run_id, summary_of(description.get("output")))

    def watch(self, run_id: str, *, reporter: Reporter) -> ExecutionOutcome:
        state_machine = self.outputs()["StateMachineArn"]
        arn = state_machine.replace(":stateMachine:", ":execution:") + f":{run_id}"
        record = self._record_or_none(run_id) or {}
        return self._follow(
            arn, run_id, progress_for(record.get("run", {}).get("request", {})), reporter
        )

    def records(self) -> list[dict[str, Any]]:
        s3 = self.client("s3")
        bucket = self.outputs()["ArtifactsBucketName"]
        records = []
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix="runs/", Delimiter="/"):
            for prefix in page.get("CommonPrefixes", []):
                run_id = prefix["Prefix"].split("/")[1]
                if run_id.startswith("_"):
                    continue
                record = self._record_or_none(run_id)
                if record is not None:
                    records.append(record)
        return sorted(records, key=lambda r: r.get("updated_at", ""), reverse=True)

    def record(self, run_id: str) -> dict[str, Any]:
        record = self._record_or_none(run_id)
        if record is None:
            raise CliError(f"no run {run_id!r} is recorded", exit_code=EXIT_USAGE)
        return record

    def _record_or_none(self, run_id: str) -> dict[str, Any] | None:
        s3 = self.client("s3")
        try:
            body = s3.get_object(
                Bucket=self.outputs()["ArtifactsBucketName"], Key=f"runs/{run_id}/run.json"
            )["Body"]
        except s3.exceptions.NoSuchKey:
            return None
        return dict(json.loads(body.read()))

    def promote(
        self,
        run_id: str,
        *,
        reporter: Reporter,
        serve: bool,
        deployment: dict[str, Any] | None = None,
    ) -> ExecutionOutcome:
        record = self.record(run_id)
        package_arn = model_package_of(record)
        self.client("sagemaker").update_model_package(
            ModelPackageArn=package_arn, ModelApprovalStatus="Approved"
        )
        reporter.message(f"approved {package_arn}")
        if deployment is None and not record["run"]["request"].get("deployment", {}).get("enabled"):
            return ExecutionOutcome(
                run_id=run_id, execution_name="", status="SUCCEEDED", started=False
            )
        return self.launch(
            deploy_document(run_id, deployment), reporter=reporter, wait=True, serve=False
        )

    def undeploy(self, target: str, *, reporter: Reporter) -> ExecutionOutcome:
        """Delete the endpoint ``target`` names (endpoint or run id) through the workflow, which
        records it on the run; the caller's ARN goes with the request as who asked."""
        caller = self.client("sts").get_caller_identity()["Arn"]
        document = {"undeploy": target, "requested_by": caller}
        return self.launch(document, reporter=reporter, wait=True, serve=False)

    def endpoints(self) -> list[EndpointRow]:
        settings = self.settings()
        return list_endpoints(
            self.client("sagemaker"), prefix=settings.prefix, region=settings.region
        )


class _TrainingLogTail:
    """Feeds METRIC lines of the run's training job (CloudWatch Logs) into the progress."""

    def __init__(self, logs: Any, job_name: str, progress: RunProgress) -> None:
        self.logs = logs
        self.job_name = job_name
        self.progress = progress
        self.since = 0

    def poll(self, state: str) -> None:
        if state != "Train model":
            return
        try:
            page = self.logs.filter_log_events(
                logGroupName="/aws/sagemaker/TrainingJobs",
                logStreamNamePrefix=self.job_name,
                filterPattern='"METRIC"',
                startTime=self.since,
            )
        except self.logs.exceptions.ResourceNotFoundException:
            return  # the job has not logged yet
        for event in page.get("events", []):
            self.progress.on_log_line(event["message"])
            self.since = max(self.since, event["timestamp"] + 1)
