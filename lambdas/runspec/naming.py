"""Run ids and the SageMaker resource names derived from them.

SageMaker names are at most 63 characters of letters, digits and hyphens; the platform prefix
(<= 20) + '-' + run id (<= 42) always fits.
"""

from __future__ import annotations

import hashlib
import json

from runspec.request import RunRequest

__all__ = [
    "SAGEMAKER_NAME_LENGTH",
    "deployment_resource_name",
    "derive_run_id",
    "run_id_for_execution",
    "run_resource_name",
    "sagemaker_experiment_name",
]

#: SageMaker's limit for training job, model, endpoint config and endpoint names.
SAGEMAKER_NAME_LENGTH = 63


def derive_run_id(request: RunRequest) -> str:
    """``run_name`` when given, else ``<experiment>-<hash of the request>``: the same request
    always gets the same id, so starting it twice cannot start two runs."""
    if request.run_name:
        return request.run_name
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return f"{request.experiment_name}-{_short_hash(canonical, 10)}"


def run_id_for_execution(request: RunRequest, execution_name: str | None) -> str:
    """The run id inside an execution. An execution started by ``finetune launch`` or the launch
    function is named after the run id; one started from the console gets a random name, and the
    run id then takes a suffix from it so that two console starts are two runs."""
    derived = derive_run_id(request)
    if request.run_name or execution_name in (None, derived):
        return derived
    return f"{derived}-{_short_hash(str(execution_name), 6)}"


def sagemaker_experiment_name(prefix: str, experiment_name: str) -> str:
    return f"{prefix}-{experiment_name}"


def run_resource_name(prefix: str, run_id: str) -> str:
    """The run's training job and trial: ``<prefix>-<run id>``."""
    return f"{prefix}-{run_id}"


def deployment_resource_name(prefix: str, run_id: str, execution_name: str) -> str:
    """The model and endpoint config of one deployment of a run.

    SageMaker refuses to create a model or endpoint config under an existing name, and a run may
    be deployed more than once (``deploy_run``, promote): each deployment execution gets its own
    names, ``<prefix>-<run id, shortened>-<8 hex of the execution name>``, at most 63 characters.
    """
    suffix = _short_hash(execution_name, 8)
    stem = run_resource_name(prefix, run_id)[: SAGEMAKER_NAME_LENGTH - len(suffix) - 1]
    return f"{stem.rstrip('-')}-{suffix}"


def _short_hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]
