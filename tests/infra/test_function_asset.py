"""The functions' code asset: ``lambdas/`` plus the training code's data rules, assembled before
synthesis (no Docker), the same bytes and hash for the same sources, importable on its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk

from stacks.components.project_function import SHARED_TRAINING_MODULES, stage_function_code
from tests.infra.synth import REPO, synthesize


def _function_asset() -> tuple[str, Path]:
    synthesized = synthesize("dev")
    resources = synthesized.templates["Workflow"]["Resources"]
    keys = {
        resource["Properties"]["Code"]["S3Key"]
        for resource in resources.values()
        if resource["Type"] == "AWS::Lambda::Function" and "S3Key" in resource["Properties"]["Code"]
    }
    (key,) = keys  # one asset shared by every function
    asset_hash = key.removesuffix(".zip")
    return asset_hash, synthesized.outdir / f"asset.{asset_hash}"


def test_the_asset_is_lambdas_plus_the_training_codes_data_rules() -> None:
    _, asset = _function_asset()
    for module in SHARED_TRAINING_MODULES:
        assert (asset / module).read_bytes() == (REPO / "training_code" / module).read_bytes()
    assert (asset / "llm_sft" / "__init__.py").read_bytes() == b""
    assert sorted(p.name for p in (asset / "llm_sft").iterdir()) == [
        "__init__.py",
        "datacheck.py",
        "strategy.py",
    ]
    assert (asset / "launch_run" / "datacheck.py").is_file()
    assert not [p for p in asset.rglob("*") if p.name == "__pycache__" or p.suffix == ".pyc"]


def test_the_asset_hash_is_the_contents_and_ignores_caches(tmp_path: Path) -> None:
    asset_hash, _ = _function_asset()
    again = stage_function_code(REPO / "lambdas")
    assert cdk.FileSystem.fingerprint(str(again)) == asset_hash
    # A __pycache__ that a test run leaves in lambdas/ changes nothing.
    source = tmp_path / "lambdas"
    shutil.copytree(REPO / "lambdas", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "launch_run" / "__pycache__").mkdir()
    (source / "launch_run" / "__pycache__" / "logic.cpython-311.pyc").write_bytes(b"\x00")
    assert cdk.FileSystem.fingerprint(str(stage_function_code(source))) == asset_hash


def test_the_launch_function_imports_the_rules_from_its_own_asset() -> None:
    _, asset = _function_asset()
    probe = (
        "import launch_run.datacheck, llm_sft.datacheck as rules; "
        "print(rules.__file__); print(len(rules.ROLES))"
    )
    environment = {
        key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PWD")
    }
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=asset,
        env={**environment, "PYTHONPATH": str(asset)},
        capture_output=True,
        text=True,
        check=True,
    )
    location, roles = result.stdout.split()
    assert Path(location).resolve() == (asset / "llm_sft" / "datacheck.py").resolve()
    assert roles == "3"
