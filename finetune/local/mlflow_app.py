"""The MLflow App, emulated: the record function's MLflow REST calls served from the local
MLflow store, after the checks AWS makes.

On AWS the record function sends SigV4-signed requests to the platform's SageMaker AI MLflow
App (record_run.mlflow_rest). Locally the App is the SQLite store the training jobs log to
(``sqlite:///.finetune/mlflow.db``), so the same requests are answered here, in-process, in
place of ``record_run.mlflow_rest.send``: each must carry the App's ARN header and a SigV4
signature for the ``sagemaker`` service, is authorized by the IAM twin against the calling
principal's policies (sagemaker:CallMlflowAppApi on the App), its JSON body is parsed with
MLflow's own protobuf messages (an unknown or mistyped field is a 400, as on a tracking server),
and it is carried out with MLflow's client on the store.
"""

from __future__ import annotations

import contextlib
import functools
import json
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

from finetune.local.iam.actions import authorizations
from record_run import mlflow_rest
from record_run.mlflow_rest import Response

__all__ = ["EmulatedMlflowApp"]

#: (method, path under /api/2.0/mlflow/) -> the MLflow operation.
_OPERATIONS = {
    ("GET", "runs/get"): "GetRun",
    ("POST", "runs/log-batch"): "LogBatch",
    ("POST", "runs/search"): "SearchRuns",
    ("GET", "experiments/get-by-name"): "GetExperimentByName",
}


class EmulatedMlflowApp:
    """Answers MLflow REST requests for the App ``app_arn`` from ``store_uri``.

    ``principals``: the IAM twin (its current principal is the caller); None: no IAM check.
    """

    def __init__(self, app_arn: str, store_uri: str, principals: Any = None) -> None:
        self.app_arn = app_arn
        self.store_uri = store_uri
        self.principals = principals
        self.calls: list[str] = []

    @functools.cached_property
    def client(self) -> Any:
        """Opened at the first request: creating a store takes seconds and logs, and a run the
        platform refuses never sends one."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.store_uri)

    @contextlib.contextmanager
    def installed(self) -> Iterator[EmulatedMlflowApp]:
        original = mlflow_rest.send
        mlflow_rest.send = self.send
        try:
            yield self
        finally:
            mlflow_rest.send = original

    def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Response:
        lowered = {k.lower(): v for k, v in headers.items()}
        parsed = urllib.parse.urlsplit(url)
        path = parsed.path.removeprefix("/api/2.0/mlflow/")
        operation = _OPERATIONS.get((method, path))
        if lowered.get("x-sm-mlflow-app-arn") != self.app_arn:
            return _error(404, "RESOURCE_DOES_NOT_EXIST", "no such MLflow App")
        authorization = lowered.get("authorization", "")
        if not authorization.startswith("AWS4-HMAC-SHA256 ") or "/sagemaker/aws4_request" not in (
            authorization
        ):
            return _error(403, "PERMISSION_DENIED", "missing SigV4 signature for sagemaker")
        if operation is None:
            return _error(404, "ENDPOINT_NOT_FOUND", f"{method} {path}")
        denied = self._authorize(operation)
        if denied is not None:
            return _error(403, "PERMISSION_DENIED", denied)
        self.calls.append(operation)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        payload = json.loads(body) if body else {}
        try:
            answer = getattr(self, f"_{operation}")(payload or query)
        except Exception as error:  # MLflow's own errors become its REST errors
            code = getattr(error, "error_code", "INVALID_PARAMETER_VALUE")
            return _error(400 if code != "RESOURCE_DOES_NOT_EXIST" else 404, code, str(error))
        return Response(200, json.dumps(answer).encode())

    def _authorize(self, operation: str) -> str | None:
        twin = self.principals
        if twin is None:
            return None
        principal = twin._principal.get()
        if principal is None or not twin.loaded:
            twin.not_evaluated[f"mlflow-app:{operation}"] += 1
            return None
        for request in authorizations(twin, "mlflow-app", operation, {"Arn": self.app_arn}):
            denial = twin._decide(principal, request, f"mlflow-app:{operation}")
            if denial is not None:
                return str(denial)
        return None

    # -- operations --------------------------------------------------------------------------

    @staticmethod
    def _parsed(message: Any, payload: Mapping[str, Any]) -> Any:
        from google.protobuf.json_format import ParseDict  # type: ignore[import-untyped]

        return ParseDict(dict(payload), message)

    def _GetRun(self, query: Mapping[str, Any]) -> dict[str, Any]:  # noqa: N802
        from mlflow.utils.proto_json_utils import message_to_json

        run = self.client.get_run(query["run_id"])
        return {"run": json.loads(message_to_json(run.to_proto()))}

    def _GetExperimentByName(self, query: Mapping[str, Any]) -> dict[str, Any]:  # noqa: N802
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

        experiment = self.client.get_experiment_by_name(query["experiment_name"])
        if experiment is None:
            raise MlflowException(
                f"no experiment {query['experiment_name']!r}", error_code=RESOURCE_DOES_NOT_EXIST
            )
        return {"experiment": {"experiment_id": experiment.experiment_id, "name": experiment.name}}

    def _SearchRuns(self, payload: Mapping[str, Any]) -> dict[str, Any]:  # noqa: N802
        from mlflow.protos.service_pb2 import SearchRuns

        request = self._parsed(SearchRuns(), payload)
        runs = self.client.search_runs(
            experiment_ids=list(request.experiment_ids),
            filter_string=request.filter,
            max_results=request.max_results or 1000,
            order_by=list(request.order_by),
        )
        return {"runs": [{"info": {"run_id": r.info.run_id}} for r in runs]}

    def _LogBatch(self, payload: Mapping[str, Any]) -> dict[str, Any]:  # noqa: N802
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.protos.service_pb2 import LogBatch

        request = self._parsed(LogBatch(), payload)
        self.client.log_batch(
            request.run_id,
            metrics=[Metric(m.key, m.value, m.timestamp, m.step) for m in request.metrics],
            params=[Param(p.key, p.value) for p in request.params],
            tags=[RunTag(t.key, t.value) for t in request.tags],
        )
        return {}


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, json.dumps({"error_code": code, "message": message}).encode())
