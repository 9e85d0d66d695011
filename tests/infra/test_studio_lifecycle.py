"""Studio from the first login: the JupyterLab lifecycle configuration is in the template, is the
domain's default, installs this environment's bundle, and the Studio role reads that bundle only.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

from stacks.components.studio_lifecycle import MAX_CONTENT, lifecycle_script, stage_studio_bundle
from tests.infra.synth import Synthesized

REPO = Path(__file__).resolve().parents[2]


def _lifecycle(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    configs = synthesized.template("Studio").find_resources("AWS::SageMaker::StudioLifecycleConfig")
    ((logical_id, config),) = configs.items()
    return logical_id, config["Properties"]


def test_jupyterlab_lifecycle_configuration_is_the_domains_default(dev: Synthesized) -> None:
    logical_id, config = _lifecycle(dev)
    assert config["StudioLifecycleConfigAppType"] == "JupyterLab"
    assert config["StudioLifecycleConfigName"] == "llmft-dev-jupyterlab-setup"

    (domain,) = dev.template("Studio").find_resources("AWS::SageMaker::Domain").values()
    jupyterlab = domain["Properties"]["DefaultUserSettings"]["JupyterLabAppSettings"]
    arn = {"Fn::GetAtt": [logical_id, "StudioLifecycleConfigArn"]}
    assert jupyterlab["LifecycleConfigArns"] == [arn]
    # Default: it runs at every JupyterLab start without anyone choosing it.
    assert jupyterlab["DefaultResourceSpec"]["LifecycleConfigArn"] == arn


def test_the_script_installs_this_environments_bundle(dev: Synthesized, prod: Synthesized) -> None:
    for synthesized, env in ((dev, "dev"), (prod, "prod")):
        _, config = _lifecycle(synthesized)
        content = config["StudioLifecycleConfigContent"]["Fn::Base64"]
        text = json.dumps(content)
        assert f'PLATFORM_ENV=\\"{env}\\"' in text
        assert "s3://" in text  # the bundle asset, named by its hash
        assert ".zip" in text

    script = lifecycle_script(
        bundle_s3_uri="s3://cdk-assets/" + "0" * 64 + ".zip", platform_env="dev", prefix="llmft-dev"
    )
    assert len(base64.b64encode(script.encode())) <= MAX_CONTENT
    assert "@@" not in script
    assert script.startswith("#!/bin/bash")


def test_the_studio_role_reads_the_bundle_object_only(dev: Synthesized) -> None:
    statements = [
        statement
        for policy in dev.template("Studio").find_resources("AWS::IAM::ManagedPolicy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement.get("Sid") == "ReadStudioBundle"
    ]
    (statement,) = statements
    assert statement["Action"] == "s3:GetObject"
    resource = json.dumps(statement["Resource"])
    assert re.search(r"[0-9a-f]{64}\.zip", resource)
    assert "*" not in resource


def test_the_bundle_installs_the_cli_and_carries_the_notebook() -> None:
    bundle = stage_studio_bundle()
    assert (bundle / "pyproject.toml").is_file()
    assert (bundle / "finetune" / "cli.py").is_file()
    assert (bundle / "studio" / "notebooks" / "finetune-walkthrough.ipynb").is_file()
    assert (bundle / "examples" / "data" / "chat" / "train.jsonl").is_file()
    assert not list(bundle.rglob("__pycache__"))
    # The lifecycle script installs only what the image cannot import.
    path = REPO / "studio" / "missing_requirements.py"
    spec = importlib.util.spec_from_file_location("missing", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["missing"] = module
    spec.loader.exec_module(module)
    assert module.missing(["typer==0.29.2", "pyyaml==6.0.4", "surely-absent-pkg==1.0"]) == [
        "surely-absent-pkg==1.0"
    ]
