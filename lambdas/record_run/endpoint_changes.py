"""Every change to an endpoint that serves a run, on the run's record: ``endpoint_changes``, a list
of who changed what when, and what the endpoint cost per hour then.

A deployment adds ``deployed`` (with its ``deployed`` milestone); an undeploy adds ``undeployed``
or, when it failed, ``undeploy-failed`` - without touching the run's status or milestones: the
run trained, was gated and registered as before; only its endpoint changed. ``who`` is the
execution that made the change and, for undeploys, who asked as the request says (the CLI writes
its caller's ARN; the idle rule its alarm); CloudTrail's StartExecution record is authoritative.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from runspec.endpoints import usd_per_hour
from runspec.run import RunDocument

__all__ = ["deployed_change", "undeploy_change", "undeploy_summary"]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def deployed_change(run: RunDocument, details: dict[str, Any], region: str) -> dict[str, Any]:
    """The change a recorded deployment made: the run's deployment plan went live."""
    plan = run.deployment
    return {
        "change": "deployed",
        "at": _now(),
        "endpoint_name": details.get("endpoint_name", plan.endpoint_name),
        "endpoint_config_name": plan.endpoint_config_name,
        "instance_type": plan.instance_type,
        "instance_count": plan.initial_instance_count,
        "usd_per_hour": usd_per_hour(plan.instance_type, plan.initial_instance_count, region),
        "execution": run.execution_name,
        "requested_by": f"execution {run.execution_name}",
        "reason": "deploy_run" if run.mode == "deploy" else "the run's deployment",
    }


def undeploy_change(run: RunDocument, *, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The change an undeploy execution made (``error``: it failed, and the endpoint stays)."""
    plan = run.undeploy
    if plan is None:
        raise ValueError("not an undeploy: the run document has no undeploy plan")
    change: dict[str, Any] = {
        "change": "undeploy-failed" if error is not None else "undeployed",
        "at": _now(),
        "endpoint_name": plan.endpoint_name,
        "endpoint_config_name": plan.endpoint_config_name,
        "instance_type": plan.instance_type,
        "instance_count": plan.instance_count,
        # What the endpoint cost per hour until now (nothing from here on, once deleted).
        "usd_per_hour": plan.usd_per_hour,
        "execution": run.execution_name,
        "trigger": plan.trigger,
        "requested_by": plan.requested_by,
        "reason": plan.reason,
    }
    if error is not None:
        change["error"] = {"Error": error.get("Error"), "Cause": error.get("Cause")}
    return change


def undeploy_summary(record: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """What the notification of an endpoint change says."""
    return {
        "run_id": record["run_id"],
        "status": record.get("status"),
        "endpoint_change": change,
    }
