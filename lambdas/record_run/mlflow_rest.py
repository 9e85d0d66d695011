"""The record function's MLflow client: MLflow's REST API, SigV4-signed, standard library only.

The training job logs what it knows (parameters, step and evaluation metrics, the per-example
table, dataset inputs, image and library versions) to an MLflow run; the facts that come later
(the gate's decision, the model package and its approval, the endpoint, the cost) are added to
that same run by the record function. The mlflow client and the sagemaker-mlflow plugin are
~100 MB with their dependencies; the few calls needed here are plain HTTPS requests.

A SageMaker AI MLflow App (``arn:...:mlflow-app/<id>``) is reached the way the sagemaker-mlflow
plugin (0.5) reaches it: ``https://mlflow.sagemaker.<region>.app.aws``, requests signed with
SigV4 for the ``sagemaker`` service, and the App's ARN in ``x-sm-mlflow-app-arn``; a tracking
server (``mlflow-tracking-server``) at ``https://<region>.experiments.sagemaker.aws``, signed
for ``sagemaker-mlflow``, ARN in ``x-mlflow-sm-tracking-server-arn``. A plain ``http(s)://``
URI is an MLflow server without authentication.

``send`` is the one place a request leaves the function; the local platform replaces it with
its emulated MLflow App (finetune/local/mlflow_app.py), which evaluates the record role's IAM
policy and serves the calls from the local MLflow store.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RECORD_MLFLOW_CALLS", "MlflowError", "MlflowRest", "Response", "endpoint_for", "send"]

#: The MLflow REST calls the record function makes (the record role is granted these on the
#: App, as the sagemaker-mlflow actions of tracking servers; MLflow Apps authorize every call
#: with sagemaker:CallMlflowAppApi).
RECORD_MLFLOW_CALLS = ("GetRun", "LogBatch", "SearchRuns", "GetExperimentByName")
_TIMEOUT_SECONDS = 10
#: MLflow's limits: a tag value at most 8000 characters, 1000 metrics / 100 params per batch.
_TAG_VALUE_LIMIT = 5000


class MlflowError(RuntimeError):
    """An MLflow call failed (HTTP status, MLflow error code and message)."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


@dataclass(frozen=True)
class Endpoint:
    url: str
    signing_service: str | None
    region: str | None
    headers: dict[str, str]


def endpoint_for(tracking_uri: str) -> Endpoint:
    """Where the tracking URI's REST API is, and how requests to it are signed."""
    if tracking_uri.startswith(("http://", "https://")):
        return Endpoint(tracking_uri.rstrip("/"), None, None, {})
    parts = tracking_uri.split(":")
    if len(parts) < 6 or parts[0] != "arn" or parts[2] != "sagemaker":
        raise MlflowError(f"{tracking_uri!r} is neither a SageMaker MLflow ARN nor an http(s) URI")
    partition, region, resource = parts[1], parts[3], parts[5].split("/")[0]
    suffix = "aws" if partition in ("aws", "aws-us-gov") else None
    if suffix is None:
        raise MlflowError(f"partition {partition!r} has no SageMaker MLflow endpoint")
    if resource == "mlflow-app":
        return Endpoint(
            f"https://mlflow.sagemaker.{region}.app.{suffix}",
            "sagemaker",
            region,
            {"x-sm-mlflow-app-arn": tracking_uri},
        )
    if resource == "mlflow-tracking-server":
        return Endpoint(
            f"https://{region}.experiments.sagemaker.{suffix}",
            "sagemaker-mlflow",
            region,
            {"x-mlflow-sm-tracking-server-arn": tracking_uri},
        )
    raise MlflowError(f"{tracking_uri!r}: {resource!r} is not an MLflow App or tracking server")


def send(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> Response:
    """One HTTPS request (replaced by the local platform's emulated MLflow App)."""
    # endpoint_for builds only https:// (or a configured http(s)://) URLs.
    request = urllib.request.Request(url, data=body, headers=dict(headers), method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as answer:  # noqa: S310
            return Response(answer.status, answer.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.read())


class MlflowRest:
    """The MLflow REST calls the record function makes, against one tracking URI."""

    def __init__(self, tracking_uri: str, *, credentials: Any = None) -> None:
        self.tracking_uri = tracking_uri
        self.endpoint = endpoint_for(tracking_uri)
        self._credentials = credentials

    def _call(
        self, method: str, path: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        url = f"{self.endpoint.url}/api/2.0/mlflow/{path}"
        body: bytes | None = None
        if method == "GET" and payload:
            url += "?" + urllib.parse.urlencode(payload, quote_via=urllib.parse.quote)
        elif payload is not None:
            body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **self.endpoint.headers}
        headers = self._signed(method, url, headers, body)
        response = send(method, url, headers, body)
        try:
            document = json.loads(response.body or b"{}")
        except ValueError:
            document = {"message": response.body[:200].decode(errors="replace")}
        if response.status >= 300:
            code = document.get("error_code", f"HTTP {response.status}")
            raise MlflowError(f"{path}: {code}: {document.get('message', '')}".strip())
        return document if isinstance(document, dict) else {}

    def _signed(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> dict[str, str]:
        if self.endpoint.signing_service is None:
            return headers
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials = self._credentials
        if credentials is None:
            import boto3

            credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise MlflowError("no AWS credentials to sign MLflow requests with")
        headers = {**headers, "X-Amz-Content-SHA256": hashlib.sha256(body or b"").hexdigest()}
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(credentials, self.endpoint.signing_service, self.endpoint.region).add_auth(
            request
        )
        return dict(request.headers.items())

    # -- calls ------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self._call("GET", "runs/get", {"run_id": run_id})["run"]
        return run

    def find_run(self, experiment_name: str, tag: str, value: str) -> str | None:
        """The newest run of the experiment whose tag ``tag`` is ``value``."""
        found = self._call("GET", "experiments/get-by-name", {"experiment_name": experiment_name})
        experiment_id = found["experiment"]["experiment_id"]
        escaped = value.replace("'", "\\'")
        runs = self._call(
            "POST",
            "runs/search",
            {
                "experiment_ids": [experiment_id],
                "filter": f"tags.`{tag}` = '{escaped}'",
                "max_results": 1,
                "order_by": ["attributes.start_time DESC"],
            },
        ).get("runs", [])
        return str(runs[0]["info"]["run_id"]) if runs else None

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, object] | None = None,
        step: int = 0,
    ) -> None:
        now = int(time.time() * 1000)
        payload: dict[str, Any] = {"run_id": run_id}
        if metrics:
            payload["metrics"] = [
                {"key": k, "value": float(v), "timestamp": now, "step": step}
                for k, v in sorted(metrics.items())
            ]
        if tags:
            payload["tags"] = [
                {"key": k, "value": str(v)[:_TAG_VALUE_LIMIT]} for k, v in sorted(tags.items())
            ]
        if len(payload) > 1:
            self._call("POST", "runs/log-batch", payload)
