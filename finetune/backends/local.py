"""The embedded local backend: the synthesized workflow on this machine (see finetune/local).

State lives in the state folder's store (``finetune/local/store.py``); every change is committed
as it happens, so any number of terminals can launch, serve, promote and list at once.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finetune.backends.base import ExecutionOutcome, Reporter
from finetune.backends.common import (
    check_run_id,
    deploy_document,
    follow_execution,
    model_package_of,
    outcome_of,
    progress_for,
    start,
    summary_of,
)
from finetune.datasets import stage_local_inputs
from finetune.endpoints import EndpointRow, list_endpoints
from finetune.errors import EXIT_USAGE, CliError
from finetune.local.session import (
    DEPLOY_RETRY_HINT,
    RETRY_HINT,
    LocalPlatform,
    LocalSession,
    check_local_data,
)
from finetune.local.store import INTERRUPTED, RUNNING, ExecutionRow
from finetune.progress import RunProgress
from runspec.settings import PlatformSettings

__all__ = ["LocalBackend"]

_POLL_SECONDS = 0.3
#: How often a command following an execution that another process runs reads the store.
_STORE_POLL_SECONDS = 0.5


class LocalBackend:
    name = "local"

    def __init__(self, state_dir: Path) -> None:
        self.session = LocalSession(state_dir)

    @property
    def warnings(self) -> list[str]:
        """Damaged state entries found (and skipped) by this command."""
        return self.session.warnings

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
        # Local paths in the request (dataset files, a base model folder) are uploaded to the
        # emulated datasets bucket; from here on the request names their s3:// URIs.
        document = stage_local_inputs(
            local.client("s3"), local.platform.datasets_bucket, document, say=reporter.message
        )
        with _logger_level("llm_sft.data", logging.ERROR):
            # Its warnings name temporary copies; the launch check reports them by object.
            check_local_data(local, document)
        started = start(document, settings, local.client)
        run_id = str(started["run_id"])
        name = str(started["execution_arn"]).rsplit(":", 1)[1]
        if not started["started"]:
            return self._existing(name, run_id, progress, reporter)
        attempt = local.stepfunctions.attempts.get(name, 1)
        again = f" (attempt {attempt}: the earlier one was interrupted)" if attempt > 1 else ""
        reporter.message(f"run {run_id}: started on the local platform{again}")
        progress.started = time.monotonic()
        store = local.store

        def on_poll(_state: str) -> None:
            if progress.states_seen != recorded:
                store.update_states(name, list(progress.states_seen))
                recorded[:] = progress.states_seen

        recorded: list[str] = []
        try:
            description = follow_execution(
                local.stepfunctions,
                started["execution_arn"],
                progress=progress,
                reporter=reporter,
                poll_seconds=_POLL_SECONDS,
                on_poll=on_poll,
            )
        except BaseException:
            # Ctrl-C, SIGTERM: the run cannot go on without this process; say so now rather
            # than when the next command finds its process gone.
            with contextlib.suppress(Exception):
                store.finish_execution(
                    name,
                    INTERRUPTED,
                    {
                        "run_id": run_id,
                        "execution_name": name,
                        "status": INTERRUPTED,
                        "states": list(progress.states_seen),
                    },
                )
            raise
        outcome = outcome_of(description, progress, run_id, summary_of(description.get("output")))
        outcome.endpoints = {
            endpoint: f"{server.url}/invocations"
            for endpoint, server in local.endpoints.servers.items()
        }
        store.finish_execution(name, outcome.status, outcome.to_dict())
        return outcome

    def _existing(
        self, name: str, run_id: str, progress: RunProgress, reporter: Reporter
    ) -> ExecutionOutcome:
        """The same request started before: its run, as AWS returns the existing execution."""
        execution = self.session.store.execution(name)
        assert execution is not None
        if execution.live:
            reporter.message(
                f"run {run_id}: the same request is already running (process "
                f"{execution.owner_pid}); following it"
            )
            return self._follow_stored(name, progress, reporter, started=False)
        reporter.message(
            f"run {run_id}: the same request already ran ({execution.status}); this is that "
            "run (choose another run_name to run it again)"
        )
        return _outcome(execution, started=False)

    def _follow_stored(
        self, name: str, progress: RunProgress, reporter: Reporter, *, started: bool
    ) -> ExecutionOutcome:
        """Follow an execution another process runs, through the store, until it ends."""
        store = self.session.store
        while True:
            execution = store.execution(name)
            assert execution is not None
            for state in execution.states[len(progress.states_seen) :]:
                if progress.enter(state):
                    reporter.progress(progress)
            if not execution.live:
                store.recover()
                execution = store.execution(name)
                assert execution is not None
                return _outcome(execution, started=started)
            time.sleep(_STORE_POLL_SECONDS)

    @staticmethod
    def _serve(local: LocalPlatform, outcome: ExecutionOutcome, reporter: Reporter) -> None:
        if not outcome.endpoints:
            reporter.message("nothing to serve: the run deployed no endpoint")
            return
        for name, url in outcome.endpoints.items():
            reporter.message(f"serving {name} at {url} (POST TGI JSON); Ctrl-C to stop")
        try:
            with _terminate_as_interrupt():
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            reporter.message("stopped serving")

    def watch(self, run_id: str, *, reporter: Reporter) -> ExecutionOutcome:
        check_run_id(run_id)
        record = self.record(run_id)
        executions = self.session.executions_of(run_id)
        if not executions:
            raise CliError(f"run {run_id} has no recorded execution", exit_code=EXIT_USAGE)
        last = executions[-1]
        progress = progress_for(record.get("run", {}).get("request", {}))
        if last.live:
            reporter.message(f"run {run_id}: running in process {last.owner_pid}; following it")
            return self._follow_stored(last.name, progress, reporter, started=True)
        for state in last.states:
            progress.enter(state)
        reporter.progress(progress)
        return _outcome(last, started=True)

    def records(self) -> list[dict[str, Any]]:
        return self.session.run_records()

    def record(self, run_id: str) -> dict[str, Any]:
        check_run_id(run_id)
        record = self.session.run_record(run_id)
        if record is None:
            known = ", ".join(r["run_id"] for r in self.records()[:5]) or "none yet"
            raise CliError(
                f"no run {run_id!r} on the local platform",
                hint=f"recent runs: {known}",
                exit_code=EXIT_USAGE,
            )
        return record

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
        wants_endpoint = deployment is not None or bool(
            record["run"]["request"].get("deployment", {}).get("enabled")
        )
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
            outcome = self._start_and_follow(
                local, deploy_document(run_id, deployment), progress, reporter
            )
            if serve:
                self._serve(local, outcome, reporter)
            return outcome

    def undeploy(self, target: str, *, reporter: Reporter) -> ExecutionOutcome:
        """Delete the local endpoint ``target`` names (endpoint or run id) through the
        workflow, which records it on the run."""
        document = {"undeploy": target, "requested_by": f"local user {getpass.getuser()}"}
        with self.session.platform() as local:
            return self._start_and_follow(local, document, progress_for({}), reporter)

    def endpoints(self) -> list[EndpointRow]:
        with self.session.platform() as local:
            settings = PlatformSettings.from_env(local.platform.launch_environment)
            return list_endpoints(
                local.client("sagemaker"), prefix=settings.prefix, region=settings.region
            )


def _outcome(execution: ExecutionRow, *, started: bool) -> ExecutionOutcome:
    """An execution as recorded in the store."""
    recorded = dict(execution.outcome or {})
    status = RUNNING if execution.live else execution.status
    outcome = ExecutionOutcome(
        run_id=execution.run_id,
        execution_name=execution.name,
        status=status,
        started=started,
        states=list(recorded.get("states") or execution.states),
        error=recorded.get("error"),
        cause=recorded.get("cause"),
        summary=recorded.get("summary"),
        endpoints=dict(recorded.get("endpoints") or {}),
    )
    if status == INTERRUPTED:
        outcome.error = outcome.error or "Interrupted"
        hint = RETRY_HINT if execution.kind == "run" else DEPLOY_RETRY_HINT
        outcome.cause = outcome.cause or f"attempt {execution.attempt}: {hint}"
    return outcome


@contextlib.contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops serving like Ctrl-C does (state is already committed either way)."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
