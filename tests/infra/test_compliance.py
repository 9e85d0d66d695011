"""Compliance as a test: cdk-nag (five packs), cfn-lint, and IAM hygiene over every stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from cfnlint.api import ManualArgs, lint_file

from stacks.nag import COMPLIANCE_PACKS, add_nag_packs
from stacks.nag_report import read_findings
from tests.infra.synth import Synthesized

# CDK emits DependsOn that a GetAtt/Ref already implies (W3005); harmless and not ours to
# remove. Its presence also proves cfn-lint ran.
ALLOWED_CFN_LINT_WARNINGS = {"W3005"}
MANAGED_POLICY_MAX_CHARS = 6144  # IAM quota, whitespace excluded


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_no_unacknowledged_cdk_nag_finding_in_any_pack(
    env_name: str, dev: Synthesized, prod: Synthesized
) -> None:
    synthesized = {"dev": dev, "prod": prod}[env_name]
    open_findings = [f"{f.rule} at {f.resource}" for f in synthesized.findings if f.reason is None]
    assert open_findings == []
    assert synthesized.validation_error is None


def test_all_five_packs_are_registered_and_fail_synth(tmp_path: Path) -> None:
    """A deliberately non-compliant bucket and function must be reported by every pack."""
    app = cdk.App(outdir=str(tmp_path), builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "Canary")
    s3.Bucket(stack, "PlainBucket")
    lambda_.Function(
        stack,
        "PlainFunction",
        runtime=lambda_.Runtime.PYTHON_3_13,
        handler="index.handler",
        code=lambda_.Code.from_inline("def handler(event, context):\n    return event\n"),
    )
    add_nag_packs(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    packs_with_findings = {f.pack for f in read_findings(tmp_path) if f.reason is None}
    assert packs_with_findings == set(COMPLIANCE_PACKS)


def test_acknowledgements_sit_on_resources_with_specific_reasons(dev: Synthesized) -> None:
    report = json.loads((dev.outdir / "validation-report.json").read_text())
    stack_ids = set(dev.templates)
    for plugin in report["pluginReports"]:
        for violation in plugin.get("suppressedViolations", []):
            assert violation["acknowledgedAt"] not in stack_ids, violation["ruleName"]
            assert "/" in violation["acknowledgedAt"], violation["ruleName"]
            assert len(violation["reason"]) >= 60, violation["ruleName"]


@pytest.mark.parametrize(("env_name", "region"), [("dev", "us-east-1"), ("prod", "eu-west-1")])
def test_cfn_lint_finds_no_errors(
    env_name: str, region: str, dev: Synthesized, prod: Synthesized
) -> None:
    synthesized = {"dev": dev, "prod": prod}[env_name]
    problems = []
    for stack in synthesized.templates:
        path = synthesized.outdir / f"{stack}.template.json"
        for match in lint_file(path, config=ManualArgs(regions=[region])):
            problems.append(f"{stack}: {match.rule.id} {match.message}")
    assert problems, "cfn-lint reported nothing at all: is it running?"
    unexpected = [p for p in problems if p.split()[1] not in ALLOWED_CFN_LINT_WARNINGS]
    assert unexpected == []


def test_no_aws_managed_full_access_policy_anywhere(dev: Synthesized) -> None:
    for template in dev.templates.values():
        assert "FullAccess" not in json.dumps(template)


def test_no_inline_role_policies(dev: Synthesized) -> None:
    for template in dev.templates.values():
        for resource in template["Resources"].values():
            assert resource["Type"] != "AWS::IAM::Policy"
            if resource["Type"] == "AWS::IAM::Role":
                assert "Policies" not in resource["Properties"]


def test_managed_policies_fit_the_iam_size_quota(dev: Synthesized, prod: Synthesized) -> None:
    for synthesized in (dev, prod):
        for template in synthesized.templates.values():
            for name, resource in template["Resources"].items():
                if resource["Type"] == "AWS::IAM::ManagedPolicy":
                    document = _deployed_form(resource["Properties"]["PolicyDocument"])
                    size = len(json.dumps(document, separators=(",", ":")))
                    assert size < MANAGED_POLICY_MAX_CHARS, (name, size)


def _deployed_form(value: Any) -> Any:
    """The document as IAM will store it, intrinsics replaced by worst-case-length values."""
    worst_case = {"AWS::Partition": "aws-us-gov", "AWS::Region": "ap-southeast-3"}
    if isinstance(value, list):
        return [_deployed_form(item) for item in value]
    if isinstance(value, dict):
        if "Ref" in value:
            return worst_case.get(value["Ref"], "x" * 12 if "Account" in value["Ref"] else "x" * 64)
        if "Fn::GetAtt" in value or "Fn::ImportValue" in value:
            return "x" * 96  # the longest attribute the platform references is a key ARN
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(str(_deployed_form(part)) for part in parts)
        return {key: _deployed_form(item) for key, item in value.items()}
    return value
