"""Emulated SageMaker endpoints: one local inference server per endpoint, with the model the
endpoint config names, downloaded from (emulated) S3."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from finetune.local.serving import InferenceServer
from finetune.local.training_runner import download_s3_uri

__all__ = ["LocalEndpointHost"]


@dataclass
class LocalEndpointHost:
    """An EndpointHost (see moto_patches) serving each endpoint on 127.0.0.1."""

    models_dir: Path
    servers: dict[str, InferenceServer] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def deploy(
        self, endpoint_name: str, endpoint_config: dict[str, Any], model: dict[str, Any]
    ) -> str:
        """Download the model (with the model's role, as SageMaker does) and serve it."""
        model_name = model["ModelName"]
        source = model["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]["S3Uri"]
        target = self.models_dir / model_name
        try:
            if not target.exists():
                download_s3_uri(boto3.client("s3", region_name="us-east-1"), source, target)
            server = InferenceServer(target).start()
        except Exception as error:  # a model that cannot load: the endpoint fails, as on AWS
            shutil.rmtree(target, ignore_errors=True)
            self.failures[endpoint_name] = f"{type(error).__name__}: {error}"
            return "Failed"
        previous = self.servers.pop(endpoint_name, None)
        if previous is not None:
            previous.stop()
        self.servers[endpoint_name] = server
        return "InService" if server.ping() else "Failed"

    def invoke(self, endpoint_name: str, body: bytes, content_type: str) -> bytes:
        server = self.servers.get(endpoint_name)
        if server is None:
            raise RuntimeError(f"endpoint {endpoint_name} is not being served")
        return server.invoke(body)

    def delete(self, endpoint_name: str) -> None:
        server = self.servers.pop(endpoint_name, None)
        if server is not None:
            server.stop()

    def stop_all(self) -> None:
        for name in list(self.servers):
            self.delete(name)
