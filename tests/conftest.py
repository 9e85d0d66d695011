"""Suite-wide settings: offline, fake AWS credentials, quiet jsii."""

from __future__ import annotations

import os

# Set at import so every module (and moto, boto3, jsii) sees them before first use.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_TRACKING_URI": "",
    }
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)


# Synthesized apps are shared by the infra and workflow suites; each is built once per session.
import tempfile
from pathlib import Path

import pytest

from tests.infra.synth import Synthesized, synthesize
from tests.report import REPORT_ENV, collected


def pytest_configure(config: pytest.Config) -> None:
    # The controlling process picks the report file; xdist workers inherit it.
    if REPORT_ENV not in os.environ:
        descriptor, path = tempfile.mkstemp(prefix="ft-report-", suffix=".jsonl")
        os.close(descriptor)
        os.environ[REPORT_ENV] = path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if hasattr(terminalreporter.config, "workerinput"):
        return
    for section, lines in sorted(collected(Path(os.environ[REPORT_ENV])).items()):
        terminalreporter.write_sep("-", f"{section}: {sum(lines.values())} checks")
        if section == IAM_SECTION:
            _iam_summary(terminalreporter, lines)
            continue
        for line in sorted(lines):
            terminalreporter.write_line(f"  {line}")


IAM_SECTION = "IAM evaluation"


def _iam_summary(terminalreporter: pytest.TerminalReporter, lines: dict[str, int]) -> None:
    """Per principal: authorizations evaluated and distinct actions (lines are
    ``principal | action``), then the refusals expected by tests of denials."""
    principals: dict[str, dict[str, int]] = {}
    for line, count in lines.items():
        principal, _, action = line.partition(" | ")
        principals.setdefault(principal, {})[action] = count
    for principal, actions in sorted(principals.items()):
        terminalreporter.write_line(
            f"  {principal}: {sum(actions.values())} authorizations evaluated, "
            f"{len(actions)} actions ({', '.join(sorted(actions))})"
        )


@pytest.fixture(scope="session")
def dev() -> Synthesized:
    return synthesize("dev")


@pytest.fixture(scope="session")
def prod() -> Synthesized:
    return synthesize("prod")


@pytest.fixture(scope="session")
def local_templates() -> Synthesized:
    synthesized = synthesize("local")
    assert synthesized.validation_error is None
    return synthesized
