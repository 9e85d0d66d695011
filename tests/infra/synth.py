"""Synthesize the platform once per environment per test session."""

from __future__ import annotations

import functools
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk.assertions import Template

from stacks.config import load_config
from stacks.nag import add_nag_packs
from stacks.nag_report import Finding, read_findings
from stacks.platform import build_platform

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Synthesized:
    outdir: Path
    templates: dict[str, dict[str, Any]]  # by construct id: Data, Network, ...
    findings: list[Finding]
    validation_error: str | None

    def template(self, stack: str) -> Template:
        return Template.from_json(self.templates[stack])


@functools.cache
def synthesize(env_name: str) -> Synthesized:
    """The app as ``cdk synth -c env=<env_name>`` builds it, with cdk.json's feature flags.

    CDK's built-in CloudFormation validation is off here (it costs ~9 s per process); cfn-lint
    checks the same templates in tests/infra/test_compliance.py.
    """
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    outdir = Path(tempfile.mkdtemp(prefix=f"cdk-{env_name}-"))
    app = cdk.App(
        outdir=str(outdir),
        context={**context, "env": env_name},
        builtin_cloud_formation_validation=False,
    )
    platform = build_platform(app, load_config(env_name))
    add_nag_packs(app)
    validation_error = None
    try:
        app.synth()
    except RuntimeError as error:  # jsii raises RuntimeError("ValidationFailed: ...")
        validation_error = str(error)
    templates = {
        stack.node.id: json.loads((outdir / stack.template_file).read_text())
        for stack in platform.stacks
    }
    return Synthesized(outdir, templates, read_findings(outdir), validation_error)


_HASH = re.compile(r"[0-9a-f]{64}")


def mask_asset_hashes(template: dict[str, Any]) -> dict[str, Any]:
    """The template with asset hashes (S3 keys, image tags) replaced by a placeholder."""
    return json.loads(_HASH.sub("<asset-hash>", json.dumps(template)))
