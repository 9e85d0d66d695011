"""The options every ``finetune`` command shares, declared once (the main commands, ``data``,
``invoke``, ``stage-model`` and the endpoint commands import them)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["AwsFlag", "JsonFlag", "LocalFlag"]

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
LocalFlag = Annotated[
    bool, typer.Option("--local", help="Use the embedded local backend (no AWS account).")
]
AwsFlag = Annotated[bool, typer.Option("--aws", help="Use the deployed platform on AWS.")]
