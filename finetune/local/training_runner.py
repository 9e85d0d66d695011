"""Emulate a SageMaker training job on this machine: channels from (emulated) S3, the real
training code through the sagemaker-training toolkit, the model back to S3."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from finetune.local.moto_patches import TrainingOutcome
from finetune.local_training import run_training_job_locally

__all__ = ["LocalTrainingRunner", "download_s3_uri"]

_S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/(?P<key>.*)$")


@dataclass
class LocalTrainingRunner:
    """A TrainingRunner (see moto_patches) that really trains.

    Props:
        jobs_dir: where each job's /opt/ml tree lives (``<jobs_dir>/<job name>/``).
        mlflow_tracking_uri: replaces the MLflow App ARN (an AWS resource) in the job's
            environment, e.g. ``sqlite:///.finetune/mlflow.db``.
        mlflow_artifact_root: where experiments created here keep their artifacts (otherwise
            MLflow would put them under the first job's working directory).
        log_sink: receives every line the job prints (progress display).
        timeout_seconds: stop a job that runs longer (the request's MaxRuntimeInSeconds is
            meant for GPUs, not this CPU).
    """

    jobs_dir: Path
    mlflow_tracking_uri: str | None = None
    mlflow_artifact_root: Path | None = None
    log_sink: Callable[[str], None] | None = None
    timeout_seconds: float | None = 1800

    def __call__(self, parameters: dict[str, Any]) -> TrainingOutcome:
        name = parameters["TrainingJobName"]
        work_dir = self.jobs_dir / name
        s3 = boto3.client("s3", region_name="us-east-1")
        channels = {
            channel["ChannelName"]: download_s3_uri(
                s3,
                channel["DataSource"]["S3DataSource"]["S3Uri"],
                work_dir / "channels" / channel["ChannelName"],
            )
            for channel in parameters.get("InputDataConfig", [])
        }
        environment = {k: str(v) for k, v in (parameters.get("Environment") or {}).items()}
        if self.mlflow_tracking_uri:
            environment["MLFLOW_TRACKING_URI"] = self.mlflow_tracking_uri
            self._ensure_experiment(environment.get("MLFLOW_EXPERIMENT_NAME", "llm-finetune"))
        else:
            environment.pop("MLFLOW_TRACKING_URI", None)
        result = run_training_job_locally(
            work_dir / "opt-ml",
            hyperparameters=dict(parameters.get("HyperParameters") or {}),
            channels=channels,
            environment=environment,
            timeout_seconds=self.timeout_seconds,
            job_name=name,
            log_sink=self.log_sink,
        )
        if not result.succeeded:
            reason = result.failure_reason or f"training exited with code {result.exit_code}"
            return TrainingOutcome(status="Failed", failure_reason=reason)
        output = f"{parameters['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{name}/output"
        self._upload(s3, result.model_dir, f"{output}/model/")
        self._upload(s3, result.output_data_dir, f"{output}/data/")
        return TrainingOutcome(
            metrics=dict(result.final_metrics),
            model_artifacts=f"{output}/model/",
            billable_seconds=int(result.duration_seconds),
        )

    def _ensure_experiment(self, name: str) -> None:
        if self.mlflow_artifact_root is None:
            return
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.mlflow_tracking_uri)
        if client.get_experiment_by_name(name) is None:
            location = (self.mlflow_artifact_root / name).resolve()
            location.mkdir(parents=True, exist_ok=True)
            client.create_experiment(name, artifact_location=location.as_uri())

    @staticmethod
    def _upload(s3: Any, folder: Path, uri: str) -> None:
        match = _S3_URI.match(uri)
        assert match is not None
        bucket, prefix = match.group("bucket"), match.group("key")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            s3.upload_file(str(path), bucket, prefix + path.relative_to(folder).as_posix())


def download_s3_uri(s3: Any, uri: str, target: Path) -> Path:
    """The object (or every object under the prefix) at ``uri`` into the folder ``target``."""
    match = _S3_URI.match(uri)
    if match is None:
        raise ValueError(f"not an S3 URI: {uri}")
    bucket, key = match.group("bucket"), match.group("key")
    target.mkdir(parents=True, exist_ok=True)
    if key and not key.endswith("/"):
        path = target / Path(key).name
        s3.download_file(bucket, key, str(path))
        return target
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=key):
        for item in page.get("Contents", []):
            relative = item["Key"][len(key) :]
            if not relative or relative.endswith("/"):
                continue
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(path))
    return target
