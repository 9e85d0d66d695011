"""The embedded local backend: the synthesized workflow on this machine (see finetune/local)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from finetune.backends.base import ExecutionOutcome, Reporter
from finetune.backends.common import (
    follow_execution,
    model_package_of,
    outcome_of,
    progress_for,
    start,
    summary_of,
)
from finetune.errors import EXIT_USAGE, CliError
from finetune.local.session import LocalPlatform, LocalSession
from finetune.progress import RunProgress
from runspec.settings import PlatformSettings

__all__ = ["LocalBackend"]

_POLL_SECONDS = 0.3


class LocalBackend:
    name = "local"

    def __init__(self, state_dir: Path) -> None:
        self.session = LocalSession(state_dir)

    def launch(
        self, document: dict[str, Any], *, reporter: Reporter, wait: bool, serve: bool
    ) -> ExecutionOutcome:
        # Local runs execute in this process: there is nothing to come back to, so they always
        # run to the end (``wait`` only matters on AWS).
        progress = progress_for(document)
        with self.session.platform(log_sink=progress.on_log_line, keep_serving=serve) as local:
            outcome = self._start_and_follow(local, document, progress, reporter)
            if serve:
                self._serve(local, outcome, reporter)
        return outcome

    def _start_and_follow(
        self,
        local: LocalPlatform,
        document: dict[str, Any],
        progress: RunProgress,
        reporter: Reporter,
    ) -> ExecutionOutcome:
        settings = PlatformSettings.from_env(local.platform.launch_environment)
        sfn = local.client("stepfunctions")
        started = start(document, settings, local.client)
        reporter.message(f"run {started['run_id']}: started on the local platform")
        progress.started = time.monotonic()
        description = follow_execution(
            sfn,
            started["execution_arn"],
            progress=progress,
            reporter=reporter,
            poll_seconds=_POLL_SECONDS,
        )
        outcome = outcome_of(
            description, progress, started["run_id"], summary_of(description.get("output"))
        )
        outcome.endpoints = {
            name: f"{server.url}/invocations" for name, server in local.endpoints.servers.items()
        }
        self.session.save_execution(outcome.execution_name, outcome.to_dict())
        return outcome

    @staticmethod
    def _serve(local: LocalPlatform, outcome: ExecutionOutcome, reporter: Reporter) -> None:
        if not outcome.endpoints:
            reporter.message("nothing to serve: the run deployed no endpoint")
            return
        for name, url in outcome.endpoints.items():
            reporter.message(f"serving {name} at {url} (POST TGI JSON); Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            reporter.message("stopped serving")

    def watch(self, run_id: str, *, reporter: Reporter) -> ExecutionOutcome:
        record = self.record(run_id)
        executions = self.session.executions_of(run_id)
        if not executions:
            raise CliError(f"run {run_id} has no recorded execution", exit_code=EXIT_USAGE)
        last = executions[-1]
        progress = progress_for(record.get("run", {}).get("request", {}))
        for state in last["states"]:
            progress.enter(state)
        reporter.progress(progress)
        return ExecutionOutcome(
            run_id=run_id,
            execution_name=last["execution_name"],
            status=last["status"],
            states=last["states"],
            error=last.get("error"),
            cause=last.get("cause"),
            summary=last.get("summary"),
        )

    def records(self) -> list[dict[str, Any]]:
        return self.session.run_records()

    def record(self, run_id: str) -> dict[str, Any]:
        record = self.session.run_record(run_id)
        if record is None:
            known = ", ".join(r["run_id"] for r in self.records()[:5]) or "none yet"
            raise CliError(
                f"no run {run_id!r} on the local platform",
                hint=f"recent runs: {known}",
                exit_code=EXIT_USAGE,
            )
        return record

    def promote(self, run_id: str, *, reporter: Reporter, serve: bool) -> ExecutionOutcome:
        record = self.record(run_id)
        package_arn = model_package_of(record)
        wants_endpoint = bool(record["run"]["request"].get("deployment", {}).get("enabled"))
        progress = progress_for(record["run"]["request"])
        with self.session.platform(keep_serving=serve) as local:
            local.client("sagemaker").update_model_package(
                ModelPackageArn=package_arn, ModelApprovalStatus="Approved"
            )
            reporter.message(f"approved {package_arn}")
            if not wants_endpoint:
                return ExecutionOutcome(
                    run_id=run_id, execution_name="", status="SUCCEEDED", started=False
                )
            outcome = self._start_and_follow(local, {"deploy_run": run_id}, progress, reporter)
            if serve:
                self._serve(local, outcome, reporter)
            return outcome
