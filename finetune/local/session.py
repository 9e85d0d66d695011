"""The local backend's session: the synthesized platform running in moto, with state kept in a
project folder (``.finetune/``) between commands.

Each command stands the emulated platform up from the synthesized ``local`` templates, restores
the emulated S3 objects and model registry from the folder, does its work, and writes them back.
Training runs the real training code; endpoints are local inference servers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.local.emulator import MOTO_CONFIG, EmulatedPlatform, deploy_platform
from finetune.local.endpoint_host import LocalEndpointHost
from finetune.local.moto_patches import patched_moto
from finetune.local.training_runner import LocalTrainingRunner
from record_run.logic import ensure_lineage

__all__ = ["LocalPlatform", "LocalSession"]

REPO = Path(__file__).resolve().parents[2]
LOCAL_ENV = "local"
DEFAULT_DATASET_KEYS = {
    "train": "datasets/default/train.jsonl",
    "validation": "datasets/default/validation.jsonl",
}
TINY_MODEL_KEY = "base-models/tiny-llama/"
#: Sources whose change means the local templates must be synthesized again.
_SYNTH_INPUTS = ("stacks", "lambdas", "training_code", "cdk.json", "app.py")


@dataclass
class LocalPlatform:
    """What a command works with inside a session."""

    platform: EmulatedPlatform
    endpoints: LocalEndpointHost
    runner: LocalTrainingRunner

    def client(self, service: str) -> Any:
        return self.platform.client(service)


@dataclass
class LocalSession:
    state_dir: Path

    # -- paths -------------------------------------------------------------------------------

    @property
    def s3_dir(self) -> Path:
        return self.state_dir / "s3"

    @property
    def registry_file(self) -> Path:
        return self.state_dir / "registry.json"

    @property
    def executions_dir(self) -> Path:
        return self.state_dir / "executions"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"

    def run_records(self) -> list[dict[str, Any]]:
        """Every run record the local platform wrote, newest first."""
        records = []
        for path in self.s3_dir.glob("*-artifacts-*/runs/*/run.json"):
            records.append(json.loads(path.read_text()))
        return sorted(records, key=lambda r: r.get("updated_at", ""), reverse=True)

    def run_record(self, run_id: str) -> dict[str, Any] | None:
        for path in self.s3_dir.glob(f"*-artifacts-*/runs/{run_id}/run.json"):
            return dict(json.loads(path.read_text()))
        return None

    def save_execution(self, name: str, summary: dict[str, Any]) -> None:
        self.executions_dir.mkdir(parents=True, exist_ok=True)
        (self.executions_dir / f"{name}.json").write_text(json.dumps(summary, indent=2))

    def executions_of(self, run_id: str) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.executions_dir.glob("*.json")):
            summary = json.loads(path.read_text())
            if summary.get("run_id") == run_id:
                found.append(summary)
        return found

    # -- templates ---------------------------------------------------------------------------

    def templates(self) -> dict[str, dict[str, Any]]:
        """The synthesized ``local`` environment, re-synthesized when the sources changed."""
        outdir = self.state_dir / "cdk.out"
        stamp = outdir / "sources.sha256"
        digest = _sources_digest()
        if not (stamp.exists() and stamp.read_text() == digest):
            shutil.rmtree(outdir, ignore_errors=True)
            _synthesize(outdir)
            stamp.write_text(digest)
        return {
            path.name.removesuffix(".template.json"): json.loads(path.read_text())
            for path in outdir.glob("*.template.json")
        }

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
        self.state_dir.mkdir(parents=True, exist_ok=True)
        runner = LocalTrainingRunner(
            jobs_dir=self.state_dir / "jobs",
            mlflow_tracking_uri=self.mlflow_uri,
            mlflow_artifact_root=self.state_dir / "mlflow-artifacts",
            log_sink=log_sink,
        )
        endpoints = LocalEndpointHost(models_dir=self.state_dir / "endpoint-models")
        function_log = (self.state_dir / "functions.log").open("a", encoding="utf-8")
        with (
            function_log,
            mock_aws(config=MOTO_CONFIG),
            patched_moto(
                training_runner=runner, endpoint_host=endpoints, function_log=function_log.write
            ),
        ):
            platform = deploy_platform(
                templates,
                # A local endpoint is up in seconds; check every second instead of every minute.
                function_environment_overrides={"FT_ENDPOINT_POLL_SECONDS": "1"},
            )
            local = LocalPlatform(platform, endpoints, runner)
            self._restore(local)
            try:
                yield local
            finally:
                self._persist(local)
                if not keep_serving:
                    endpoints.stop_all()

    def _restore(self, local: LocalPlatform) -> None:
        s3 = local.client("s3")
        for bucket in (local.platform.datasets_bucket, local.platform.artifacts_bucket):
            root = self.s3_dir / bucket
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                s3.upload_file(str(path), bucket, path.relative_to(root).as_posix())
        self._seed(local)
        sagemaker = local.client("sagemaker")
        if self.registry_file.exists():
            for package in json.loads(self.registry_file.read_text()):
                sagemaker.create_model_package(**package)
        # SageMaker keeps Experiments between calls; the emulation rebuilds each run's lineage
        # (experiment, trial, run component) from the run records so later milestones find it.
        for record in self.run_records():
            ensure_lineage(sagemaker, record["run"])

    def _seed(self, local: LocalPlatform) -> None:
        """The default dataset (the repository's examples) and a tiny base model, so that ``{}``
        and the demo run with no downloads."""
        s3 = local.client("s3")
        bucket = local.platform.datasets_bucket
        examples = REPO / "examples" / "data" / "chat"
        present = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        for channel, key in DEFAULT_DATASET_KEYS.items():
            if key not in present:
                s3.upload_file(str(examples / f"{channel}.jsonl"), bucket, key)
        if f"{TINY_MODEL_KEY}config.json" not in present:
            model_dir = self.state_dir / "base-models" / "tiny-llama"
            if not (model_dir / "config.json").exists():
                from llm_sft.tiny import build_tiny_model, texts_from_jsonl

                build_tiny_model(
                    model_dir,
                    texts_from_jsonl([examples / "train.jsonl", examples / "validation.jsonl"]),
                )
            for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
                s3.upload_file(
                    str(path), bucket, TINY_MODEL_KEY + path.relative_to(model_dir).as_posix()
                )

    def _persist(self, local: LocalPlatform) -> None:
        s3 = local.client("s3")
        for bucket in (local.platform.datasets_bucket, local.platform.artifacts_bucket):
            root = self.s3_dir / bucket
            paginator = s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    path = root / item["Key"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, item["Key"], str(path))
        sagemaker = local.client("sagemaker")
        packages = []
        summaries = sagemaker.list_model_packages(
            ModelPackageGroupName=local.platform.model_package_group,
            SortBy="CreationTime",
            SortOrder="Ascending",
        )["ModelPackageSummaryList"]
        for summary in summaries:
            package = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            packages.append(
                {
                    key: package[key]
                    for key in (
                        "ModelPackageGroupName",
                        "ModelPackageDescription",
                        "ModelApprovalStatus",
                        "InferenceSpecification",
                        "CustomerMetadataProperties",
                    )
                    if key in package
                }
            )
        self.registry_file.parent.mkdir(parents=True, exist_ok=True)
        self.registry_file.write_text(json.dumps(packages, indent=2, default=str))


def _quiet_libraries() -> None:
    """The local backend reports through the CLI; library chatter would bury it. moto logs every
    caught task error (the workflow catches them on purpose), jsii a Node end-of-life banner,
    transformers progress bars while building the tiny model."""
    import logging
    import os

    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("moto", "botocore", "urllib3"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for name in _SYNTH_INPUTS:
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
