"""Names and figures of the platform's endpoints, one source for the launch function, the record
function, the state machine and the CLI.

An endpoint serves one production variant, ``AllTraffic``; Application Auto Scaling names it
``endpoint/<endpoint>/variant/AllTraffic`` (RegisterScalableTarget, ResourceId for SageMaker).
The alarms the workflow creates for an endpoint are named ``<endpoint>-<purpose>``, so that the
platform's ``<prefix>-*`` grants cover them and an endpoint's alarms are found by name.
"""

from __future__ import annotations

from runspec.catalog import UnknownInstanceType, get_instance

__all__ = [
    "RUN_ID_TAG",
    "VARIANT_NAME",
    "endpoint_alarm_names",
    "idle_alarm_name",
    "scaling_resource_id",
    "usd_per_hour",
]

#: The one production variant of every platform endpoint config.
VARIANT_NAME = "AllTraffic"
#: The tag the platform puts on every run's SageMaker resources (endpoint configs included).
RUN_ID_TAG = "ft:run-id"
#: What each alarm of an endpoint watches, by name suffix.
_ALARM_PURPOSES = ("idle",)


def scaling_resource_id(endpoint_name: str) -> str:
    """Application Auto Scaling's ResourceId of the endpoint's variant."""
    return f"endpoint/{endpoint_name}/variant/{VARIANT_NAME}"


def idle_alarm_name(endpoint_name: str) -> str:
    """The alarm on the endpoint's Invocations that fires when it has been idle too long."""
    return f"{endpoint_name}-idle"


def endpoint_alarm_names(endpoint_name: str) -> list[str]:
    """Every alarm the workflow may create for the endpoint (deleted with it)."""
    return [f"{endpoint_name}-{purpose}" for purpose in _ALARM_PURPOSES]


def usd_per_hour(instance_type: str | None, instance_count: int, region: str) -> float | None:
    """On-demand USD per hour of ``instance_count`` instances (the catalog's approximate price;
    None for a type the catalog does not know)."""
    if instance_type is None:
        return None
    try:
        price = get_instance(instance_type).price(region)
    except UnknownInstanceType:
        return None
    return None if price is None else round(price[0] * instance_count, 4)
