"""State folders written before the state store: imported once, so an upgrade loses no run.

Earlier versions kept the local platform's state as files rewritten at the end of every command:
``s3/<bucket>/<key>`` (the emulated buckets), ``registry.json`` (the model registry) and
``executions/<name>.json`` (each execution's outcome). The first command of this version that
finds them copies the artifacts bucket's objects, the packages and the executions into the store
(in one transaction) and leaves the files where they are. A file that cannot be read is named
in a warning and skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetune.local.store import PackageRow, StateStore, StoredObject

__all__ = ["has_legacy_state", "import_legacy_state"]

_MARKER = "legacy_imported"
_REGION_ACCOUNT = "us-east-1:123456789012"


def has_legacy_state(state_dir: Path) -> bool:
    return (state_dir / "s3").is_dir() or (state_dir / "registry.json").is_file()


def import_legacy_state(state_dir: Path, store: StateStore) -> int:
    """Import the legacy files of ``state_dir`` unless done before; the entries imported."""
    if store.meta(_MARKER) is not None:
        return 0
    imported = 0
    with store.transaction():
        if store.meta(_MARKER) is not None:  # another process did it meanwhile
            return 0
        for bucket in sorted(p for p in (state_dir / "s3").glob("*-artifacts-*") if p.is_dir()):
            for path in sorted(p for p in bucket.rglob("*") if p.is_file()):
                key = path.relative_to(bucket).as_posix()
                if store.object_version(bucket.name, key) is None:
                    store.put_object(
                        StoredObject(bucket.name, key, "legacy", '"legacy"', path.read_bytes())
                    )
                    imported += 1
        imported += _import_registry(state_dir / "registry.json", store)
        imported += _import_executions(state_dir / "executions", store)
        store.set_meta(_MARKER, "1")
    return imported


def _load(path: Path, store: StateStore) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        store.warnings.append(f"{path}: cannot be read ({error}); skipped it (the file is kept)")
        return None


def _import_registry(path: Path, store: StateStore) -> int:
    packages = _load(path, store) if path.is_file() else None
    if not isinstance(packages, list) or store.packages():
        return 0
    imported = 0
    for version, package in enumerate(packages, start=1):
        if not isinstance(package, dict) or "ModelPackageGroupName" not in package:
            store.warnings.append(f"{path}: entry {version} is not a model package; skipped it")
            continue
        group = str(package["ModelPackageGroupName"])
        spec = {
            "model_package_group_name": group,
            "model_package_description": package.get("ModelPackageDescription"),
            "model_approval_status": package.get("ModelApprovalStatus"),
            "inference_specification": package.get("InferenceSpecification"),
            "customer_metadata_properties": package.get("CustomerMetadataProperties"),
        }
        store.insert_package(
            PackageRow(
                arn=f"arn:aws:sagemaker:{_REGION_ACCOUNT}:model-package/{group.lower()}/{version}",
                group_name=group,
                version=version,
                status=str(package.get("ModelApprovalStatus") or "PendingManualApproval"),
                spec=spec,
                metadata={
                    str(k): str(v)
                    for k, v in (package.get("CustomerMetadataProperties") or {}).items()
                },
                approval_description=None,
                created_at="1970-01-01T00:00:00+00:00",
            )
        )
        imported += 1
    return imported


def _import_executions(folder: Path, store: StateStore) -> int:
    imported = 0
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        outcome = _load(path, store)
        if not isinstance(outcome, dict) or not isinstance(outcome.get("run_id"), str):
            if outcome is not None:
                store.warnings.append(f"{path}: not an execution outcome; skipped it")
            continue
        name = str(outcome.get("execution_name") or path.stem)
        if store.execution(name) is not None:
            continue
        deploy = "-deploy-" in name
        request: Any = (
            {"deploy_run": outcome["run_id"]} if deploy else _request_of(store, outcome["run_id"])
        )
        store.import_execution(
            name,
            run_id=outcome["run_id"],
            kind="deploy" if deploy else "run",
            execution_input=json.dumps(request),
            status=str(outcome.get("status") or "SUCCEEDED"),
            outcome=outcome,
        )
        imported += 1
    return imported


def _request_of(store: StateStore, run_id: str) -> Any:
    """The execution input the run was started with: its request without defaults."""
    from runspec.request import RunRequestError, parse_run_request

    record = store.run_record(run_id)
    request = (record or {}).get("run", {}).get("request", {})
    try:
        return parse_run_request(request).model_dump(mode="json", exclude_defaults=True)
    except RunRequestError:
        return request
