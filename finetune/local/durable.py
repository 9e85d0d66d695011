"""Write-through from the emulated services to the state store, and the restore that loads the
store into a fresh emulated platform.

moto stays the execution engine: every command runs the platform in its own, in-memory moto.
What must outlive the command is written through to the store (``store.py``) at the moment the
emulated service changes it, inside the emulated call, before it returns:

- S3: every object written to or deleted from the platform's buckets (``S3Backend.put_object``
  carries PutObject, CopyObject and CompleteMultipartUpload; ``delete_object`` DeleteObject):
  run records, evaluation results, model artifacts.
- SageMaker model registry: ``CreateModelPackage`` takes its version number from the store in
  the same write transaction that stores the package (``BEGIN IMMEDIATE``), so two processes
  never both register ``<group>/12``; ``UpdateModelPackage`` keeps the package's metadata unless
  the call changes it, as SageMaker does.
- SageMaker models, endpoint configs and endpoints (create, update, delete).

Reads go through to the store wherever another process may have changed something since this
one started: ``GetObject``/``HeadObject`` of a key another process rewrote, and
``ListModelPackages``/``DescribeModelPackage`` (packages registered or approved elsewhere).

Workflow executions are claimed in the store before they start (``ClaimingStepFunctions``): the
same request started twice, in one process or two, is one run, as on AWS; a different request
under an existing run name is refused; an execution interrupted with its process is started
again as its next attempt.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from finetune.local.store import (
    INTERRUPTED,
    RUNNING,
    ExecutionRow,
    PackageRow,
    StateStore,
    StoredObject,
)

__all__ = ["ClaimingStepFunctions", "DurableState", "execution_kind"]

_REGION = "us-east-1"
_DEFAULT_APPROVAL = "PendingManualApproval"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@dataclass
class DurableState:
    """Hooks the emulated services of this process to ``store`` for the platform's ``buckets``.

    Use ``installed()`` inside ``mock_aws`` and ``patched_moto`` (the endpoint hooks wrap the
    local endpoint host's), then ``restore()`` once the platform is deployed."""

    store: StateStore
    buckets: tuple[str, ...]
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _packages_seen: int = field(default=-1, repr=False)

    # -- switches -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def unpersisted(self) -> Iterator[None]:
        """Changes made in this thread inside the block are not written through (restoring the
        store itself, seeding objects that are rebuilt every time)."""
        previous = getattr(self._local, "suspended", False)
        self._local.suspended = True
        try:
            yield
        finally:
            self._local.suspended = previous

    def _persisting(self, bucket: str | None = None) -> bool:
        if getattr(self._local, "suspended", False):
            return False
        return bucket is None or bucket in self.buckets

    # -- installation -------------------------------------------------------------------------

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from moto.s3.models import S3Backend
        from moto.sagemaker.models import SageMakerModelBackend

        replacements: list[tuple[Any, str, Callable[..., Any]]] = []
        for owner, name, make in (
            (S3Backend, "put_object", self._put_object),
            (S3Backend, "delete_object", self._delete_object),
            (S3Backend, "get_object", self._get_object),
            (SageMakerModelBackend, "create_model_package", self._create_model_package),
            (SageMakerModelBackend, "update_model_package", self._update_model_package),
            (SageMakerModelBackend, "list_model_packages", self._reading_packages),
            (SageMakerModelBackend, "describe_model_package", self._reading_packages),
            (SageMakerModelBackend, "create_model", self._created("model", "model_name")),
            (
                SageMakerModelBackend,
                "create_endpoint_config",
                self._created("endpoint_config", "endpoint_config_name"),
            ),
            (SageMakerModelBackend, "create_endpoint", self._endpoint_changed),
            (SageMakerModelBackend, "update_endpoint", self._endpoint_changed),
            # An endpoint reaches its outcome (InService on the new config, Failed) when a
            # DescribeEndpoint sees its transition end: that is a change too.
            (SageMakerModelBackend, "describe_endpoint", self._endpoint_described),
            (SageMakerModelBackend, "delete_model", self._deleted("model")),
            (SageMakerModelBackend, "delete_endpoint_config", self._deleted("endpoint_config")),
            (SageMakerModelBackend, "delete_endpoint", self._deleted("endpoint")),
        ):
            current = getattr(owner, name, None)
            if current is not None:  # update_endpoint exists only with the endpoint patches
                replacements.append((owner, name, make(current)))
        with contextlib.ExitStack() as stack:
            for owner, name, replacement in replacements:
                stack.enter_context(mock.patch.object(owner, name, replacement))
            yield

    # -- S3 -------------------------------------------------------------------------------------

    def _put_object(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def put_object(backend: Any, *args: Any, **kwargs: Any) -> Any:
            key = original(backend, *args, **kwargs)
            if self._persisting(key.bucket_name):
                self.store.put_object(
                    StoredObject(
                        bucket=key.bucket_name,
                        key=key.name,
                        version_id=str(key.version_id),
                        etag=str(key.etag),
                        body=bytes(key.value),
                    )
                )
            return key

        return put_object

    def _delete_object(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def delete_object(
            backend: Any, bucket_name: str, key_name: str, *args: Any, **kwargs: Any
        ) -> Any:
            result = original(backend, bucket_name, key_name, *args, **kwargs)
            if self._persisting(bucket_name):
                # What is left is the latest version, if any (deleting an old version keeps it).
                latest = _latest_key(backend, bucket_name, key_name)
                if latest is None:
                    self.store.delete_object(bucket_name, key_name)
                elif str(latest.version_id) != self.store.object_version(bucket_name, key_name):
                    self.store.put_object(_stored(latest))
            return result

        return delete_object

    def _get_object(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def get_object(
            backend: Any,
            bucket_name: str,
            key_name: str,
            version_id: str | None = None,
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            if version_id is None and self._persisting(bucket_name):
                self._refresh_object(backend, bucket_name, key_name)
            return original(backend, bucket_name, key_name, version_id, *args, **kwargs)

        return get_object

    def _refresh_object(self, backend: Any, bucket: str, key: str) -> None:
        """Another process may have rewritten the object since this one loaded it."""
        stored_version = self.store.object_version(bucket, key)
        if stored_version is None:
            return
        latest = _latest_key(backend, bucket, key)
        if latest is not None and str(latest.version_id) == stored_version:
            return
        stored = self.store.get_object(bucket, key)
        if stored is not None:
            with self.unpersisted():
                self._install_object(backend, stored)

    @staticmethod
    def _install_object(backend: Any, stored: StoredObject) -> None:
        key = backend.put_object(stored.bucket, stored.key, stored.body)
        key._version_id = stored.version_id  # the version id S3 gave it when it was written

    # -- model registry -----------------------------------------------------------------------

    def _create_model_package(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def create_model_package(backend: Any, **kwargs: Any) -> str:
            group = kwargs.get("model_package_group_name")
            if not group or kwargs.get("model_package_name") or not self._persisting():
                return str(original(backend, **kwargs))
            spec = _jsonable(kwargs)
            with self.store.transaction():
                self._sync_packages(backend, force=True)
                version = self.store.next_package_version(group)
                package = _new_package(backend, spec, version)
                self.store.insert_package(
                    PackageRow(
                        arn=package.arn,
                        group_name=group,
                        version=version,
                        status=package.model_approval_status or _DEFAULT_APPROVAL,
                        spec=spec,
                        metadata=dict(package.customer_metadata_properties or {}),
                        approval_description=None,
                        created_at=package.creation_time.isoformat(),
                    )
                )
            return str(package.arn)

        return create_model_package

    def _update_model_package(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def update_model_package(backend: Any, **kwargs: Any) -> str:
            with self.store.transaction():
                self._sync_packages(backend, force=True)
                package = backend.describe_model_package(kwargs["model_package_arn"])
                # SageMaker changes only what the call names: metadata keys are added or
                # replaced, removed only when listed in CustomerMetadataPropertiesToRemove.
                metadata = dict(package.customer_metadata_properties or {})
                metadata.update(kwargs.get("customer_metadata_properties") or {})
                for name in kwargs.get("customer_metadata_properties_to_remove") or []:
                    metadata.pop(name, None)
                arn = original(
                    backend,
                    **{
                        **kwargs,
                        "model_approval_status": kwargs.get("model_approval_status")
                        or package.model_approval_status,
                        "approval_description": kwargs.get("approval_description")
                        or package.approval_description,
                        "customer_metadata_properties": metadata,
                        "customer_metadata_properties_to_remove": [],
                    },
                )
                if self._persisting():
                    self.store.update_package(
                        package.arn,
                        status=package.model_approval_status or _DEFAULT_APPROVAL,
                        metadata=metadata,
                        approval_description=package.approval_description,
                    )
            return str(arn)

        return update_model_package

    def _reading_packages(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def read(backend: Any, *args: Any, **kwargs: Any) -> Any:
            self._sync_packages(backend)
            return original(backend, *args, **kwargs)

        return read

    def _sync_packages(self, backend: Any, *, force: bool = False) -> None:
        """Make this process's registry what the store holds (packages other processes
        registered or approved since), when the store's registry changed."""
        if getattr(self._local, "suspended", False):
            return
        revision = self.store.packages_revision()
        if revision == self._packages_seen and not force:
            return
        for row in self.store.packages():
            package = backend.model_packages.get(row.arn)
            if package is None:
                package = _new_package(backend, row.spec, row.version)
                package.creation_time = dt.datetime.fromisoformat(row.created_at)
            package.set_model_approval_status(row.status)
            package.customer_metadata_properties = dict(row.metadata)
            package.approval_description = row.approval_description
        self._packages_seen = revision

    # -- models, endpoint configs, endpoints --------------------------------------------------

    def _created(self, kind: str, name_argument: str) -> Callable[..., Any]:
        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def create(backend: Any, **kwargs: Any) -> Any:
                created = original(backend, **kwargs)
                if self._persisting():
                    self.store.put_resource(kind, kwargs[name_argument], _jsonable(kwargs))
                return created

            return create

        return make

    def _endpoint_changed(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def change(backend: Any, *args: Any, **kwargs: Any) -> Any:
            endpoint = original(backend, *args, **kwargs)
            if self._persisting():
                self.store.put_resource(
                    "endpoint",
                    endpoint.endpoint_name,
                    {
                        "endpoint_name": endpoint.endpoint_name,
                        "endpoint_config_name": endpoint.endpoint_config_name,
                        "status": endpoint.endpoint_status,
                        "tags": _jsonable(endpoint.tags),
                    },
                )
            return endpoint

        return change

    def _endpoint_described(self, original: Callable[..., Any]) -> Callable[..., Any]:
        persist = self._endpoint_changed(lambda backend, name: backend.endpoints[name])

        def describe(backend: Any, endpoint_name: str) -> Any:
            described = original(backend, endpoint_name)
            stored = self.store.resources("endpoint").get(endpoint_name)
            endpoint = backend.endpoints.get(endpoint_name)
            if (
                endpoint is not None
                and stored is not None
                and (stored.get("status"), stored.get("endpoint_config_name"))
                != (endpoint.endpoint_status, endpoint.endpoint_config_name)
            ):
                persist(backend, endpoint_name)
            return described

        return describe

    def _deleted(self, kind: str) -> Callable[..., Any]:
        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def delete(backend: Any, name: str, *args: Any, **kwargs: Any) -> Any:
                result = original(backend, name, *args, **kwargs)
                if self._persisting():
                    self.store.delete_resource(kind, name)
                return result

            return delete

        return make

    # -- restore ------------------------------------------------------------------------------

    def restore(self) -> None:
        """Load the store into this process's emulated platform (call once, after deploying
        it, with the hooks installed)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends
        from moto.sagemaker.models import FakeEndpoint, sagemaker_backends

        s3 = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
        sagemaker = sagemaker_backends[DEFAULT_ACCOUNT_ID][_REGION]
        with self.unpersisted():
            for bucket in self.buckets:
                for stored in self.store.objects(bucket):
                    self._install_object(s3, stored)
            for spec in self.store.resources("model").values():
                sagemaker.create_model(**spec)
            for spec in self.store.resources("endpoint_config").values():
                if all(v["ModelName"] in sagemaker._models for v in spec["production_variants"]):
                    sagemaker.create_endpoint_config(**spec)
            for spec in self.store.resources("endpoint").values():
                config_name = spec["endpoint_config_name"]
                if config_name not in sagemaker.endpoint_configs:
                    continue
                config = sagemaker.describe_endpoint_config(config_name)
                # Constructed directly: creating it through the API would deploy it again.
                endpoint = FakeEndpoint(
                    account_id=sagemaker.account_id,
                    region_name=sagemaker.region_name,
                    endpoint_name=spec["endpoint_name"],
                    endpoint_config_name=config_name,
                    production_variants=config["ProductionVariants"],
                    data_capture_config=config["DataCaptureConfig"],
                    tags=spec.get("tags") or [],
                )
                # A process that ended mid-transition took its model server with it: a creation
                # did not complete (Failed), an update left the previous config serving.
                status = spec.get("status", "InService")
                endpoint.endpoint_status = _SETTLED_AFTER_RESTART.get(status, status)
                sagemaker.endpoints[endpoint.endpoint_name] = endpoint
        self._sync_packages(sagemaker, force=True)


_SETTLED_AFTER_RESTART = {
    "Creating": "Failed",
    "Updating": "InService",
    "SystemUpdating": "InService",
    "RollingBack": "InService",
}


def _latest_key(backend: Any, bucket: str, key: str) -> Any:
    from moto.s3.models import FakeKey

    found = backend.get_bucket(bucket).keys.get(key)
    return found if isinstance(found, FakeKey) else None


def _stored(key: Any) -> StoredObject:
    return StoredObject(
        bucket=key.bucket_name,
        key=key.name,
        version_id=str(key.version_id),
        etag=str(key.etag),
        body=bytes(key.value),
    )


def _new_package(backend: Any, spec: dict[str, Any], version: int) -> Any:
    """A versioned package of ``spec`` (CreateModelPackage's arguments) numbered ``version``,
    in this process's registry; what moto's CreateModelPackage does, with our number."""
    from moto.sagemaker.exceptions import AWSValidationException
    from moto.sagemaker.models import ModelPackage

    group = spec["model_package_group_name"]
    if group not in backend.model_package_groups:
        raise AWSValidationException(
            "An error occurred (ValidationException) when calling the CreateModelPackage "
            "operation: Model Package Group does not exist."
        )
    package = ModelPackage(
        model_package_name=group,
        model_package_group_name=group,
        model_package_version=version,
        model_package_description=spec.get("model_package_description"),
        inference_specification=spec.get("inference_specification"),
        source_algorithm_specification=spec.get("source_algorithm_specification"),
        validation_specification=spec.get("validation_specification"),
        certify_for_marketplace=bool(spec.get("certify_for_marketplace", False)),
        model_approval_status=spec.get("model_approval_status"),
        metadata_properties=spec.get("metadata_properties"),
        model_metrics=spec.get("model_metrics"),
        approval_description=None,
        customer_metadata_properties=spec.get("customer_metadata_properties"),
        drift_check_baselines=spec.get("drift_check_baselines"),
        domain=spec.get("domain"),
        task=spec.get("task"),
        sample_payload_url=spec.get("sample_payload_url"),
        additional_inference_specifications=spec.get("additional_inference_specifications"),
        client_token=spec.get("client_token"),
        region_name=backend.region_name,
        account_id=backend.account_id,
        model_package_type="Versioned",
        tags=spec.get("tags"),
    )
    backend.model_package_name_mapping[package.arn] = package.arn
    latest = backend.model_package_name_mapping.get(group)
    if latest is None or backend.model_packages[latest].model_package_version < version:
        backend.model_package_name_mapping[group] = package.arn
    backend.model_packages[package.arn] = package
    return package


# -- executions ---------------------------------------------------------------------------------


def execution_kind(execution_input: str) -> tuple[str, str | None]:
    """``("deploy", run id)`` for a deploy request, ``("undeploy", None)`` for an undeploy (its
    run is known once resolved), ``("run", None)`` otherwise."""
    try:
        document = json.loads(execution_input)
    except ValueError:
        return "run", None
    if isinstance(document, dict) and isinstance(document.get("deploy_run"), str):
        return "deploy", document["deploy_run"]
    if isinstance(document, dict) and ("undeploy" in document or "idle_alarm" in document):
        return "undeploy", None
    return "run", None


class ClaimingStepFunctions:
    """A Step Functions client whose ``start_execution`` first claims the execution name in the
    store, so that every process sees every execution:

    - a new name: claimed (attempt 1) and started;
    - a name already claimed, running in a live process or ended: ``ExecutionAlreadyExists``, as
      Step Functions answers; ``describe_execution`` then answers from the store, so the launch
      logic returns the existing run or refuses a different request under the same name;
    - a name whose execution was interrupted (its process ended mid-run), with the same input:
      ``on_retry`` clears what the interrupted attempt left (its run record is kept in the
      store's attempts), and the next attempt is claimed and started.

    Everything else is the wrapped client's."""

    def __init__(
        self,
        client: Any,
        store: StateStore,
        *,
        before_start: Callable[[str], None],
        on_retry: Callable[[ExecutionRow], dict[str, Any] | None],
    ) -> None:
        self._client = client
        self._store = store
        self._before_start = before_start
        self._on_retry = on_retry
        #: name -> attempt number, for the executions this client started.
        self.attempts: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def start_execution(self, *, stateMachineArn: str, name: str, input: str, **kwargs: Any) -> Any:  # noqa: N803
        kind, deploy_run = execution_kind(input)
        arn = stateMachineArn.replace(":stateMachine:", ":execution:") + f":{name}"
        existing = self._store.execution(name)
        if existing is not None and not _retryable(existing, input):
            raise self._already_exists(arn)
        self._before_start(kind)
        with self._store.transaction():
            existing = self._store.execution(name)
            if existing is None:
                attempt = self._store.claim_execution(
                    name, run_id=deploy_run or name, kind=kind, execution_input=input
                )
            elif _retryable(existing, input):
                attempt = self._store.retry_execution(existing, record=self._on_retry(existing))
            else:
                raise self._already_exists(arn)
        try:
            started = self._client.start_execution(
                stateMachineArn=stateMachineArn, name=name, input=input, **kwargs
            )
        except BaseException:
            self._store.release_execution(name, attempt)
            raise
        self.attempts[name] = attempt
        return started

    def describe_execution(self, *, executionArn: str, **kwargs: Any) -> Any:  # noqa: N803
        try:
            return self._client.describe_execution(executionArn=executionArn, **kwargs)
        except self._client.exceptions.ExecutionDoesNotExist:
            row = self._store.execution(executionArn.rsplit(":", 1)[1])
            if row is None:
                raise
            return {
                "executionArn": executionArn,
                "stateMachineArn": executionArn.replace(":execution:", ":stateMachine:").rsplit(
                    ":", 1
                )[0],
                "name": row.name,
                "status": RUNNING if row.live else row.status,
                "input": row.input,
                "startDate": dt.datetime.fromisoformat(row.started_at),
            }

    def _already_exists(self, arn: str) -> Exception:
        error: Exception = self._client.exceptions.ExecutionAlreadyExists(
            {
                "Error": {
                    "Code": "ExecutionAlreadyExists",
                    "Message": f"Execution Already Exists: '{arn}'",
                }
            },
            "StartExecution",
        )
        return error


def _retryable(row: ExecutionRow, execution_input: str) -> bool:
    interrupted = row.status == INTERRUPTED or (row.status == RUNNING and not row.live)
    return interrupted and json.loads(row.input) == json.loads(execution_input)
