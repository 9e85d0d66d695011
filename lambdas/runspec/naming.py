"""Run ids and the SageMaker resource names derived from them.

SageMaker names are at most 63 characters of letters, digits and hyphens; the platform prefix
(<= 20) + '-' + run id (<= 42) always fits.
"""

from __future__ import annotations

import hashlib
import json

from runspec.request import RunRequest

__all__ = ["derive_run_id", "run_id_for_execution", "sagemaker_experiment_name"]


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


def _short_hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]
