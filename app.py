#!/usr/bin/env python3
"""CDK entry point: config (``-c env=NAME``) -> stacks -> cdk-nag (five packs) -> synth."""

import aws_cdk as cdk

from stacks.config import ConfigError, load_config
from stacks.nag import add_nag_packs
from stacks.platform import build_platform

app = cdk.App()
try:
    config = load_config(app.node.try_get_context("env"))
except ConfigError as error:
    raise SystemExit(f"cdk synth stopped: {error}") from None
build_platform(app, config)
add_nag_packs(app)
app.synth()
