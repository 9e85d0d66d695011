"""The Studio walkthrough notebook, executed cell by cell (nbclient, a real Jupyter kernel) against
the local backend: upload and check a dataset, estimate, launch (the one real local training run
of this suite: the tiny model with the local demo's settings), watch, runs, deploy, invoke. A
notebook that no longer runs fails here, not in a user's Studio.

The notebook runs in a copy of its folder beside the repository's examples, so that it writes
its run file there and not into the checkout; its outputs are never committed (the committed
file is checked to have none).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.cli.conftest import REPO, cli_environment

NOTEBOOK = REPO / "studio" / "notebooks" / "finetune-walkthrough.ipynb"

pytestmark = pytest.mark.slow


def test_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None


def test_the_walkthrough_runs_end_to_end_on_the_local_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "llm-finetuning"
    (work / "notebooks").mkdir(parents=True)
    shutil.copy(NOTEBOOK, work / "notebooks")
    (work / "examples").symlink_to(REPO / "examples")
    state = tmp_path / "state"
    # The kernel inherits this environment: the checkout's sources, the suite's cache of derived
    # files (templates, tiny model), the local backend in a state folder of its own.
    for key, value in cli_environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FINETUNE_ARGS", f"--local --state-dir {state}")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.llmft/platform.json: not in Studio
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(work / "notebooks")}},
    ).execute()

    outputs = {
        index: "".join(output.get("text", "") for output in cell.outputs)
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
    }
    text = "\n".join(outputs.values())
    assert "platform: local backend" in text
    assert "errors: 0" in text
    assert "walkthrough SUCCEEDED" in text
    assert "endpoint: walkthrough" in text
    # The last cell asked the deployed tiny model and printed what it generated.
    assert outputs[max(outputs)].strip() != ""
    assert (work / "notebooks" / "walkthrough-run.yaml").is_file()
    assert os.environ["FINETUNE_ARGS"].startswith("--local")
