"""CLI suites: one cache of derived files (synthesized templates, tiny base model) per session,
shared by every local state folder and by the CLI subprocesses the tests start."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def finetune_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("finetune-cache")
    previous = os.environ.get("FINETUNE_CACHE_DIR")
    os.environ["FINETUNE_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("FINETUNE_CACHE_DIR", None)
    else:
        os.environ["FINETUNE_CACHE_DIR"] = previous


def cli_environment() -> dict[str, str]:
    """The environment of a ``finetune`` subprocess: this checkout's sources first."""
    paths = [str(REPO), str(REPO / "training_code"), str(REPO / "lambdas")]
    existing = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*paths, *([existing] if existing else [])]),
        "NO_COLOR": "1",
    }


def start_cli(state: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """``finetune --local --state-dir STATE ARGS`` in a process of its own (a terminal)."""
    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "finetune.cli", "--local", "--state-dir", str(state), *args],
        cwd=REPO,
        env=cli_environment(),
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
