"""``finetune endpoints``: the platform's endpoints, what they cost per hour now and which run
each serves; the same for both backends (they differ only in the SageMaker client).

An endpoint is the platform's when it is named ``<prefix>-...``; the run it serves is the
``ft:run-id`` tag of the endpoint config it serves (the workflow tags every config it creates).
Cost: the catalog's approximate on-demand price of the instance type (runspec.catalog) times
the instances running now (DescribeEndpoint's CurrentInstanceCount), not a bill.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from runspec.endpoints import RUN_ID_TAG, usd_per_hour

__all__ = ["EndpointRow", "list_endpoints", "print_endpoints"]


@dataclass(frozen=True)
class EndpointRow:
    name: str
    status: str
    endpoint_config_name: str | None
    instance_type: str | None
    instance_count: int
    usd_per_hour: float | None
    #: The run the endpoint serves (None: not created by a platform run).
    run_id: str | None
    last_modified: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_endpoints(sagemaker: Any, *, prefix: str, region: str) -> list[EndpointRow]:
    """The platform's endpoints, newest change first."""
    rows = []
    paginator = sagemaker.get_paginator("list_endpoints")
    for page in paginator.paginate(NameContains=prefix):
        for summary in page.get("Endpoints", []):
            name = str(summary["EndpointName"])
            if name.startswith(f"{prefix}-"):
                rows.append(_row(sagemaker, name, region))
    return sorted(rows, key=lambda row: row.last_modified, reverse=True)


def _row(sagemaker: Any, name: str, region: str) -> EndpointRow:
    endpoint = sagemaker.describe_endpoint(EndpointName=name)
    config_name = endpoint.get("EndpointConfigName")
    variants = endpoint.get("ProductionVariants") or [{}]
    instance_type, run_id, configured_count = None, None, 0
    if config_name:
        config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        variant = (config.get("ProductionVariants") or [{}])[0]
        instance_type = variant.get("InstanceType")
        configured_count = int(variant.get("InitialInstanceCount") or 0)
        tags = sagemaker.list_tags(ResourceArn=config["EndpointConfigArn"]).get("Tags", [])
        run_id = next((t["Value"] for t in tags if t["Key"] == RUN_ID_TAG), None)
    count = int(variants[0].get("CurrentInstanceCount") or configured_count)
    if endpoint["EndpointStatus"] in ("Failed", "Deleting"):
        count = 0
    modified = endpoint.get("LastModifiedTime")
    return EndpointRow(
        name=name,
        status=str(endpoint["EndpointStatus"]),
        endpoint_config_name=config_name,
        instance_type=instance_type,
        instance_count=count,
        usd_per_hour=usd_per_hour(instance_type, count, region),
        run_id=run_id,
        last_modified=modified.isoformat() if hasattr(modified, "isoformat") else str(modified),
    )


def print_endpoints(console: Console, rows: list[EndpointRow]) -> None:
    if not rows:
        console.print("no endpoints: nothing is billing for serving")
        return
    table = Table(title="Endpoints of the platform ($/h: approximate on-demand, from the catalog)")
    for column in ("endpoint", "status", "instances", "$/h now", "serves run", "changed"):
        table.add_column(column, no_wrap=column in ("endpoint", "serves run"))
    for row in rows:
        table.add_row(
            row.name,
            row.status,
            f"{row.instance_count} x {row.instance_type or '?'}",
            "?" if row.usd_per_hour is None else f"{row.usd_per_hour:.2f}",
            row.run_id or "(not a platform run)",
            row.last_modified[:19].replace("T", " "),
        )
    console.print(table)
    total = sum(row.usd_per_hour or 0.0 for row in rows)
    console.print(
        f"{len(rows)} endpoint(s), about ${total:.2f}/h while they run "
        "(finetune undeploy ENDPOINT stops one; its run can be deployed again)",
        highlight=False,
    )
