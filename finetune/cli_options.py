"""The options every ``finetune`` command shares, declared once (the main commands, ``data``,
``invoke``, ``stage-model`` and the endpoint commands import them)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["AwsFlag", "JsonFlag", "LocalFlag", "ServeFlag", "WaitFlag"]

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
LocalFlag = Annotated[
    bool, typer.Option("--local", help="Use the embedded local backend (no AWS account).")
]
AwsFlag = Annotated[bool, typer.Option("--aws", help="Use the deployed platform on AWS.")]
ServeFlag = Annotated[
    bool, typer.Option(help="Local: keep serving the deployed endpoint until Ctrl-C.")
]
WaitFlag = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Follow the run until it ends (AWS).")
]
