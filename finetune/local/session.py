"""The local backend's session: the synthesized platform running in moto, its durable state in
the state folder's store (``.finetune/state.db``, see ``store.py``).

Each command that runs the workflow stands the emulated platform up from the synthesized
``local`` templates, loads the store into it, and from then on every change of durable state is
committed to the store as the emulated service makes it (``durable.py``). Nothing is written
back at exit, so a command that ends any way at all (Ctrl-C, SIGTERM, ``kill -9``, a full disk)
leaves every change it committed, and two commands running at once never overwrite each other.
Commands that only read (``runs``, ``watch``, ``compare``) read the store and start nothing.

Training runs the real training code, each attempt in its own job folder
(``jobs/<run>-a<attempt>/``); endpoints are local inference servers. What is derived rather
than state (the synthesized templates, the tiny base model) is kept in a cache folder shared by
state folders (``$FINETUNE_CACHE_DIR``, default ``~/.cache/llmft-finetune``), built atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from finetune.local.durable import ClaimingStepFunctions, DurableState
from finetune.local.emulator import MOTO_CONFIG, EmulatedPlatform, deploy_platform
from finetune.local.endpoint_host import LocalEndpointHost
from finetune.local.iam.twin import IamTwin
from finetune.local.legacy import has_legacy_state, import_legacy_state
from finetune.local.mlflow_app import EmulatedMlflowApp
from finetune.local.moto_patches import TrainingOutcome, patched_moto
from finetune.local.store import (
    INTERRUPTED,
    RUNNING,
    TERMINAL_RECORD_STATUSES,
    ExecutionRow,
    StateStore,
    is_process_alive,
    process_token,
)
from finetune.local.training_runner import LocalTrainingRunner
from finetune.records import INTERRUPTED_HINT
from record_run.logic import ensure_lineage

__all__ = ["RETRY_HINT", "LocalPlatform", "LocalSession", "cache_dir", "check_local_data"]

REPO = Path(__file__).resolve().parents[2]
LOCAL_ENV = "local"
DEFAULT_DATASET_KEYS = {
    "train": "datasets/default/train.jsonl",
    "validation": "datasets/default/validation.jsonl",
}
TINY_MODEL_KEY = "base-models/tiny-llama/"
#: Sources whose change means the local templates must be synthesized again.
_SYNTH_INPUTS = ("stacks", "lambdas", "training_code", "cdk.json", "app.py")
#: Sources of the tiny base model.
_TINY_INPUTS = ("training_code/llm_sft/tiny.py", "examples/data/chat")
_COMPLETE = ".complete"
RETRY_HINT = INTERRUPTED_HINT
DEPLOY_RETRY_HINT = "the process deploying it ended; promote it again to retry the deployment"


def cache_dir() -> Path:
    """Where derived files (templates, the tiny model) are cached, shared by state folders."""
    configured = os.environ.get("FINETUNE_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmft-finetune"


@dataclass
class LocalPlatform:
    """What a command works with inside a session."""

    platform: EmulatedPlatform
    endpoints: LocalEndpointHost
    runner: LocalTrainingRunner
    store: StateStore
    stepfunctions: ClaimingStepFunctions

    def client(self, service: str) -> Any:
        if service == "stepfunctions":
            return self.stepfunctions
        return self.platform.client(service)


@dataclass
class LocalSession:
    state_dir: Path

    def __post_init__(self) -> None:
        self.store = StateStore(self.state_dir / "state.db")
        self._legacy_checked = False

    def _ready(self) -> StateStore:
        """The store, with executions whose process ended marked interrupted, and a state
        folder of an earlier version imported (once)."""
        if not self._legacy_checked:
            self._legacy_checked = True
            if has_legacy_state(self.state_dir):
                import_legacy_state(self.state_dir, self.store)
        self.store.recover()
        return self.store

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"

    @property
    def warnings(self) -> list[str]:
        """Damaged entries found (and skipped) so far."""
        return self.store.warnings

    # -- reading the state ----------------------------------------------------------------------

    def run_records(self) -> list[dict[str, Any]]:
        """Every run, newest first: its record, with ``status`` ``interrupted`` when the process
        running it ended first; a run interrupted before it recorded anything is listed from
        its execution."""
        self._ready()
        records = self.store.run_records()
        by_run: dict[str, list[ExecutionRow]] = {}
        for execution in self.store.executions():
            by_run.setdefault(execution.run_id, []).append(execution)
        runs = {
            run_id: _with_executions(record, by_run.get(run_id, []))
            for run_id, record in records.items()
        }
        for run_id, executions in by_run.items():
            started = [e for e in executions if e.kind == "run"]
            if run_id not in runs and started:
                runs[run_id] = _placeholder_record(started[0])
        return sorted(runs.values(), key=lambda r: str(r.get("updated_at", "")), reverse=True)

    def run_record(self, run_id: str) -> dict[str, Any] | None:
        self._ready()
        record = self.store.run_record(run_id)
        executions = self.store.executions(run_id=run_id)
        if record is not None:
            return _with_executions(record, executions)
        started = [e for e in executions if e.kind == "run"]
        return _placeholder_record(started[0]) if started else None

    def executions_of(self, run_id: str) -> list[ExecutionRow]:
        """The run's executions (the run itself, then deployments), oldest first."""
        self._ready()
        return self.store.executions(run_id=run_id)

    # -- templates and the tiny model (cached) ------------------------------------------------

    def templates(self) -> dict[str, dict[str, Any]]:
        """The synthesized ``local`` environment, synthesized again when the sources change."""
        digest = _digest(_SYNTH_INPUTS)
        outdir = _cached(f"templates-{digest[:24]}", _synthesize)
        return {
            path.name.removesuffix(".template.json"): json.loads(path.read_text())
            for path in outdir.glob("*.template.json")
        }

    @staticmethod
    def tiny_model() -> Path:
        def build(target: Path) -> None:
            from llm_sft.tiny import build_tiny_model, texts_from_jsonl

            examples = REPO / "examples" / "data" / "chat"
            build_tiny_model(
                target, texts_from_jsonl([examples / "train.jsonl", examples / "validation.jsonl"])
            )

        return _cached(f"tiny-llama-{_digest(_TINY_INPUTS)[:24]}", build)

    # -- the running platform ----------------------------------------------------------------

    @contextlib.contextmanager
    def platform(
        self,
        *,
        log_sink: Callable[[str], None] | None = None,
        keep_serving: bool = False,
    ) -> Iterator[LocalPlatform]:
        from moto import mock_aws

        _quiet_libraries()
        templates = self.templates()
        runner = LocalTrainingRunner(
            jobs_dir=self.state_dir / "jobs",
            mlflow_tracking_uri=self.mlflow_uri,
            mlflow_artifact_root=self.state_dir / "mlflow-artifacts",
            log_sink=log_sink,
        )
        # Each process downloads the models it serves into a folder of its own: a folder
        # another process left half-written (or filled with an earlier attempt's model) is
        # never served.
        models_dir = self._endpoint_models_dir()
        endpoints = LocalEndpointHost(models_dir=models_dir)
        function_log = _LazyLog(self.state_dir / "functions.log")
        # Every call a principal of the platform makes is evaluated against its synthesized
        # policies, as on AWS: a local run fails where the deployed one would.
        iam = IamTwin()
        with contextlib.ExitStack() as stack:
            stack.callback(shutil.rmtree, models_dir, True)
            stack.callback(function_log.close)
            stack.enter_context(mock_aws(config=MOTO_CONFIG))
            stack.enter_context(
                patched_moto(
                    training_runner=_AttemptRunner(runner, self.store),
                    endpoint_host=endpoints,
                    function_log=function_log.write,
                    principals=iam,
                )
            )
            platform = deploy_platform(
                templates,
                # A local endpoint is up in seconds; check every second instead of every minute.
                function_environment_overrides={"FT_ENDPOINT_POLL_SECONDS": "1"},
            )
            iam.load(platform.intrinsics)
            if platform.mlflow_app_arn is not None:
                # The record function's REST calls to the MLflow App land in the local store.
                stack.enter_context(
                    EmulatedMlflowApp(
                        platform.mlflow_app_arn, self.mlflow_uri, principals=iam
                    ).installed()
                )
            durable = DurableState(
                self.store, (platform.datasets_bucket, platform.artifacts_bucket)
            )
            stack.enter_context(durable.installed())
            self._ready()
            durable.restore()
            self._seed_datasets(platform, durable)
            self._restore_lineage(platform)
            stepfunctions = ClaimingStepFunctions(
                platform.client("stepfunctions"),
                self.store,
                before_start=lambda kind: self._seed_tiny_model(platform, durable, kind),
                on_retry=lambda execution: self._clear_attempt(platform, execution),
            )
            local = LocalPlatform(platform, endpoints, runner, self.store, stepfunctions)
            try:
                yield local
            finally:
                if not keep_serving:
                    endpoints.stop_all()

    def _endpoint_models_dir(self) -> Path:
        root = self.state_dir / "endpoint-models"
        if root.is_dir():  # folders of processes that ended without cleaning up
            for folder in root.iterdir():
                match = re.fullmatch(r"(\d+)-(\d+)", folder.name)
                if match and not is_process_alive(f"{match[1]}:{match[2]}"):
                    shutil.rmtree(folder, ignore_errors=True)
        token = process_token() or str(os.getpid())
        return root / token.replace(":", "-")

    def _seed_datasets(self, platform: EmulatedPlatform, durable: DurableState) -> None:
        """The default dataset (the repository's examples), so that ``{}`` and the demo run
        with no uploads. Seeded in every session, never stored."""
        s3 = platform.client("s3")
        examples = REPO / "examples" / "data" / "chat"
        with durable.unpersisted():
            for channel, key in DEFAULT_DATASET_KEYS.items():
                # put_object, not upload_file: uploads run in the caller's thread, which is the
                # one whose writes are not persisted.
                body = (examples / f"{channel}.jsonl").read_bytes()
                s3.put_object(Bucket=platform.datasets_bucket, Key=key, Body=body)

    def _seed_tiny_model(
        self, platform: EmulatedPlatform, durable: DurableState, kind: str
    ) -> None:
        """The tiny base model the local examples train, in the datasets bucket; built once
        (cached), uploaded when a run is about to start."""
        if kind != "run":
            return
        s3 = platform.client("s3")
        bucket = platform.datasets_bucket
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=TINY_MODEL_KEY, MaxKeys=1)
        if listed.get("KeyCount"):
            return
        model_dir = self.tiny_model()
        with durable.unpersisted():
            for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
                if path.name == _COMPLETE:
                    continue
                key = TINY_MODEL_KEY + path.relative_to(model_dir).as_posix()
                s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    def _restore_lineage(self, platform: EmulatedPlatform) -> None:
        """SageMaker keeps Experiments between calls; the emulation rebuilds each run's lineage
        (experiment, trial, run component) from the run records so later milestones find it."""
        sagemaker = platform.client("sagemaker")
        for run_id, record in self.store.run_records().items():
            try:
                ensure_lineage(sagemaker, _typed_run(record["run"]))
            except (KeyError, TypeError, AttributeError, ValueError) as error:
                self.store.warnings.append(
                    f"{self.store.path}: the run record of {run_id} does not describe a run "
                    f"({type(error).__name__}: {str(error).splitlines()[0]}); its lineage in the "
                    "emulated Experiments "
                    "was not rebuilt"
                )

    def _clear_attempt(
        self, platform: EmulatedPlatform, execution: ExecutionRow
    ) -> dict[str, Any] | None:
        """Before an interrupted execution starts again: the SageMaker model and endpoint config
        its deployment created go (their names derive from the execution's name, which the new
        attempt keeps, and SageMaker refuses an existing name); for a run, its run record and
        evaluation move out of the way (the store keeps the record with the interrupted attempt),
        so the new attempt records a run of its own instead of merging into the old one."""
        sagemaker = platform.client("sagemaker")
        for name in _deployment_names(platform, execution):
            with contextlib.suppress(Exception):  # not created before the interruption
                sagemaker.delete_endpoint_config(EndpointConfigName=name)
            with contextlib.suppress(Exception):
                sagemaker.delete_model(ModelName=name)
        if execution.kind != "run":
            return None
        record = self.store.run_record(execution.run_id)
        s3 = platform.client("s3")
        bucket = platform.artifacts_bucket
        for key in self.store.object_keys(bucket, f"runs/{execution.run_id}/"):
            s3.delete_object(Bucket=bucket, Key=key)
        return record


def _deployment_names(platform: EmulatedPlatform, execution: ExecutionRow) -> list[str]:
    """The model and endpoint config names a deployment in ``execution`` uses."""
    import runspec.naming as naming

    name_of = getattr(naming, "deployment_resource_name", None)
    prefix = platform.launch_environment.get("FT_PREFIX")
    if name_of is None or not prefix:
        return []
    return [str(name_of(prefix, execution.run_id, execution.name))]


def check_local_data(local: LocalPlatform, document: dict[str, Any]) -> None:
    """Validate a run's training data with the training code's own rules before anything
    starts: on this platform the data is at hand, so bad rows (malformed JSON, roles out of
    order, ...) are a usage error naming the object and line, not a failed run minutes later.
    Channels that do not resolve are left to the launch logic, which names them."""
    from finetune.errors import EXIT_USAGE, CliError
    from finetune.local.training_runner import download_s3_uri
    from llm_sft.data import load_channel
    from llm_sft.errors import DataError
    from runspec.request import RunRequestError, is_deploy_request, parse_run_request

    if is_deploy_request(document):
        return
    try:
        request = parse_run_request(document)
    except RunRequestError:
        return
    bucket = local.platform.datasets_bucket
    if request.dataset is None:
        channels = {name: f"s3://{bucket}/{key}" for name, key in DEFAULT_DATASET_KEYS.items()}
    else:
        channels = {"train": request.dataset.train}
        if request.dataset.validation:
            channels["validation"] = request.dataset.validation
    s3 = local.client("s3")
    with tempfile.TemporaryDirectory(prefix="finetune-data-") as scratch:
        for name, uri in channels.items():
            if not uri.startswith(f"s3://{bucket}/"):
                continue
            folder = Path(scratch) / name
            try:
                download_s3_uri(s3, uri, folder)
            except Exception:  # noqa: S112 - absent or unreadable: the launch logic says so
                continue
            if not any(folder.rglob("*.jsonl")):
                continue
            try:
                load_channel(name, folder)
            except DataError as error:
                local_name = (
                    str(folder / uri.rsplit("/", 1)[1]) if not uri.endswith("/") else str(folder)
                )
                message = str(error).replace(local_name, uri.rstrip("/"))
                raise CliError(
                    f"dataset.{name}: {message}",
                    hint="fix the rows named above; training_code/README.md describes the format",
                    exit_code=EXIT_USAGE,
                ) from None


@dataclass
class _AttemptRunner:
    """Runs each training job in a folder of its own attempt: ``jobs/<run>-a<attempt>/``."""

    runner: LocalTrainingRunner
    store: StateStore

    def __call__(self, parameters: dict[str, Any]) -> TrainingOutcome:
        environment = parameters.get("Environment") or {}
        run_id = str(environment.get("FT_RUN_ID") or parameters["TrainingJobName"])
        execution = self.store.execution(run_id)
        attempt = execution.attempt if execution is not None else 1
        jobs_dir = self.runner.jobs_dir / f"{run_id}-a{attempt}"
        if jobs_dir.exists():  # never train in a folder an earlier job used
            self.runner.jobs_dir.mkdir(parents=True, exist_ok=True)
            jobs_dir = Path(
                tempfile.mkdtemp(prefix=f"{run_id}-a{attempt}-", dir=self.runner.jobs_dir)
            )
        runner = dataclasses.replace(self.runner, jobs_dir=jobs_dir)
        if runner.mlflow_tracking_uri:
            # Two jobs starting at once would both create the MLflow database and experiment;
            # the store's write lock makes it one at a time.
            with self.store.transaction():
                runner._ensure_experiment(
                    str(environment.get("MLFLOW_EXPERIMENT_NAME", "llm-finetune"))
                )
        return runner(parameters)


class _LazyLog:
    """A log file opened on its first line (a command that runs no function writes none)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None

    def write(self, text: str) -> int:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        return self._file.write(text)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _with_executions(record: dict[str, Any], executions: list[ExecutionRow]) -> dict[str, Any]:
    """The record as people should see it: a run left unfinished by an execution whose process
    ended (the run's own, or a deployment of it) is ``interrupted``, with how to retry."""
    if record.get("status") in TERMINAL_RECORD_STATUSES or any(e.live for e in executions):
        return record
    interrupted = [e for e in executions if e.status in (INTERRUPTED, RUNNING)]
    if not interrupted:
        return record
    last = interrupted[-1]
    hint = RETRY_HINT if last.kind == "run" else DEPLOY_RETRY_HINT
    return {
        **record,
        "status": "interrupted",
        "interrupted": {"attempt": last.attempt, "execution": last.name, "hint": hint},
    }


def _placeholder_record(execution: ExecutionRow) -> dict[str, Any]:
    """A run that recorded nothing yet (interrupted or refused before its first milestone)."""
    try:
        request = json.loads(execution.input)
    except ValueError:
        request = {}
    request = request if isinstance(request, dict) else {}
    status = {RUNNING: "running" if execution.live else "interrupted"}.get(
        execution.status, "interrupted" if execution.status == INTERRUPTED else "failed"
    )
    record: dict[str, Any] = {
        "run_id": execution.run_id,
        "status": status,
        "updated_at": execution.updated_at,
        "run": {
            "request": request,
            "base_model": str(request.get("base_model", "")),
            "training": dict(request.get("training") or {}),
        },
        "milestones": [],
    }
    if status == "interrupted":
        record["interrupted"] = {"attempt": execution.attempt, "hint": RETRY_HINT}
    outcome = execution.outcome or {}
    if outcome.get("error"):
        record["milestones"].append(
            {
                "milestone": "failed",
                "error": {"Error": outcome["error"], "Cause": outcome.get("cause")},
            }
        )
    return record


def _typed_run(run: dict[str, Any]) -> Any:
    """The run document as record_run's ``ensure_lineage`` takes it: typed when it is typed."""
    import record_run.logic as record_logic

    document_type = getattr(record_logic, "RunDocument", None)
    return run if document_type is None else document_type.model_validate(run)


def _cached(name: str, build: Callable[[Path], None]) -> Path:
    """``build`` into the cache folder ``name`` once: built in a temporary folder and renamed
    into place, so a build interrupted halfway is never used and two processes building at
    once both end up with one complete folder."""
    root = cache_dir()
    target = root / name
    if (target / _COMPLETE).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        build(staging)
        (staging / _COMPLETE).write_text(name)
        if target.exists() and not (target / _COMPLETE).exists():
            shutil.rmtree(target, ignore_errors=True)  # left incomplete by an older version
        try:
            staging.rename(target)
        except OSError:
            if not (target / _COMPLETE).exists():  # not another process's complete build
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _quiet_libraries() -> None:
    """The local backend reports through the CLI; library chatter would bury it. moto logs every
    caught task error (the workflow catches them on purpose), jsii a Node end-of-life banner,
    transformers progress bars while building the tiny model."""
    import logging

    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("moto", "botocore", "urllib3"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _digest(inputs: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in inputs:
        root = REPO / name
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(path.relative_to(REPO).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def _synthesize(outdir: Path) -> None:
    """``cdk synth -c env=local``, in-process (no CLI needed), checks included."""
    import aws_cdk as cdk

    from stacks.config import load_config
    from stacks.nag import add_nag_packs
    from stacks.platform import build_platform

    context = json.loads((REPO / "cdk.json").read_text())["context"]
    app = cdk.App(outdir=str(outdir), context={**context, "env": LOCAL_ENV})
    build_platform(app, load_config(LOCAL_ENV))
    add_nag_packs(app)
    app.synth()
