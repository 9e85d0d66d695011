"""The endpoint commands: ``finetune deploy RUN`` (approve and deploy, with overrides),
``finetune undeploy ENDPOINT|RUN`` (through the workflow, recorded on the run) and
``finetune endpoints`` (what serves, at what cost per hour). Registered on the main app by
``finetune.cli``, whose helpers they use (imported when they run: the CLI imports this module)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from finetune.backends.common import check_run_id
from finetune.cli_options import AwsFlag, JsonFlag, LocalFlag, ServeFlag
from finetune.endpoints import print_endpoints

if TYPE_CHECKING:
    from finetune.backends.base import Backend
    from finetune.cli import Options

__all__ = ["deploy_command", "endpoints_command", "undeploy_command"]


def deploy_command(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    instance_type: Annotated[
        str | None, typer.Option(help="Serve on this instance type (default: the run's).")
    ] = None,
    instance_count: Annotated[
        int | None, typer.Option(min=1, max=10, help="Instances (default: the run's).")
    ] = None,
    serve: ServeFlag = False,
    json_output: JsonFlag = False,
    local: LocalFlag = False,
    aws: AwsFlag = False,
) -> None:
    """Approve a run's model package and deploy it (what promote does); options override the
    run's own deployment settings. A run whose endpoint was undeployed is deployed again."""

    from finetune.cli import _follow, _run

    def action(options: Options) -> None:
        check_run_id(run_id)
        overrides = {
            key: value
            for key, value in (
                ("instance_type", instance_type),
                ("initial_instance_count", instance_count),
            )
            if value is not None
        }
        _follow(
            options,
            lambda backend, reporter: backend.promote(
                run_id,
                reporter=reporter,
                serve=serve,
                deployment=_deployment_of(backend, run_id, overrides) if overrides else None,
            ),
        )

    _run(ctx, action, json_output=json_output, local=local, aws=aws)


def _deployment_of(backend: Backend, run_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The run's requested deployment settings with ``overrides``."""
    requested = backend.record(run_id)["run"]["request"].get("deployment") or {}
    return {**requested, **overrides}


def undeploy_command(
    ctx: typer.Context,
    endpoint: Annotated[
        str, typer.Argument(help="Endpoint (with or without the platform prefix) or run id.")
    ],
    json_output: JsonFlag = False,
    local: LocalFlag = False,
    aws: AwsFlag = False,
) -> None:
    """Delete an endpoint of the platform (its model, config and package stay; finetune deploy
    serves the run again); recorded on the run it served."""

    from finetune.cli import _follow, _run

    def action(options: Options) -> None:
        check_run_id(endpoint)  # endpoint names follow the same rule
        _follow(options, lambda backend, reporter: backend.undeploy(endpoint, reporter=reporter))

    _run(ctx, action, json_output=json_output, local=local, aws=aws)


def endpoints_command(
    ctx: typer.Context,
    json_output: JsonFlag = False,
    local: LocalFlag = False,
    aws: AwsFlag = False,
) -> None:
    """The platform's endpoints: instances, approximate $/h now, the run each serves."""

    from finetune.cli import _backend, _run

    def action(options: Options) -> None:
        rows = _backend(options).endpoints()
        if options.json:
            options.out.print_json(json.dumps([row.to_dict() for row in rows]))
        else:
            print_endpoints(options.out, rows)

    _run(ctx, action, json_output=json_output, local=local, aws=aws)
