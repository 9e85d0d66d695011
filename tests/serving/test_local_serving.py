"""The local inference server serves a folder as the serving container would, and the smoke
test run against it tells a model that computes what training computed from one that does not.

Locally both sides compute in float32 on the same CPU, so the served loss equals the trained
one to ~1e-6: these tests use a tight tolerance (``EXACT``). The production tolerance is for GPU
kernels and bfloat16; a tiny, barely trained model shows a wrong rope only by tenths of a nat
on a 60-token example, a real Llama 3 by nats.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finetune.local.serving import InferenceServer
from llm_sft.serving_contract import NotServable
from smoke_test import logic
from tests.serving.conftest import TrainedModel

pytestmark = pytest.mark.slow

EXACT = logic.LossTolerance(absolute=1e-3, relative=0.0)


class ServerRuntime:
    """A sagemaker-runtime client whose endpoint is the local server."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    def invoke_endpoint(self, *, EndpointName: str, Body: bytes, **_: Any) -> dict[str, Any]:  # noqa: N803
        return {"Body": io.BytesIO(self.server.invoke(Body))}


class FolderS3:
    """An S3 client whose model folder is a local folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        return {"Body": io.BytesIO((self.folder / Path(Key).name).read_bytes())}


ARTIFACTS = "s3://artifacts/models/run/job/output/model/"


@pytest.fixture(scope="module")
def served(trained_llama3: TrainedModel) -> Iterator[InferenceServer]:
    server = InferenceServer(trained_llama3.model_dir).start()
    yield server
    server.stop()


def _ask(server: InferenceServer, body: dict[str, Any]) -> Any:
    return json.loads(server.invoke(json.dumps(body).encode()))


def test_smoke_test_passes_a_model_served_as_trained(
    served: InferenceServer, trained_llama3: TrainedModel
) -> None:
    result = logic.smoke_test(
        ServerRuntime(served),
        "local",
        s3=FolderS3(trained_llama3.model_dir),
        model_artifacts=ARTIFACTS,
        tolerance=EXACT,
    )
    assert result["generated_text"]
    assert abs(result["loss_difference"]) < 1e-4
    assert result["scored_tokens"] == len(trained_llama3.reference()["target_positions"])
    assert result["reference_held_out"] is True


def test_smoke_test_fails_a_model_served_with_the_wrong_rope(
    trained_llama3: TrainedModel, tmp_path: Path
) -> None:
    """The served folder without the rope keys transformers 4 reads: it answers, but wrongly."""
    folder = tmp_path / "model"
    shutil.copytree(trained_llama3.model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["rope_theta"], config["rope_scaling"]
    (folder / "config.json").write_text(json.dumps(config))
    server = InferenceServer(folder).start()
    try:
        with pytest.raises(logic.SmokeTestFailed, match="computes another model than training"):
            logic.smoke_test(
                ServerRuntime(server),
                "local",
                s3=FolderS3(folder),
                model_artifacts=ARTIFACTS,
                tolerance=EXACT,
            )
    finally:
        server.stop()


def test_a_folder_the_serving_stack_cannot_read_does_not_start(
    trained_llama3: TrainedModel, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(trained_llama3.model_dir, folder)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["tokenizer_class"] = "TokenizersBackend"
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    with pytest.raises(NotServable, match="TokenizersBackend"):
        InferenceServer(folder).start()


def test_details_have_tgi_shape(served: InferenceServer) -> None:
    answer = _ask(
        served,
        {
            "inputs": "Hello there",
            "parameters": {"max_new_tokens": 2, "details": True, "decoder_input_details": True},
        },
    )
    assert isinstance(answer, list)
    assert len(answer) == 1
    details = answer[0]["details"]
    assert set(details) == {"finish_reason", "generated_tokens", "seed", "prefill", "tokens"}
    prefill = details["prefill"]
    assert prefill[0]["logprob"] is None
    assert prefill[0]["text"] == "<s>"
    assert all(isinstance(t["logprob"], float) and t["logprob"] <= 0 for t in prefill[1:])
    assert {"id", "text", "logprob", "special"} <= set(details["tokens"][0])
    assert details["generated_tokens"] == len(details["tokens"]) <= 2
    assert details["finish_reason"] in ("length", "eos_token")
    # return_full_text defaults to true for a model served from a folder, as in TGI.
    assert answer[0]["generated_text"].startswith("Hello there")


def test_no_details_unless_asked(served: InferenceServer) -> None:
    answer = _ask(
        served, {"inputs": "Hi", "parameters": {"max_new_tokens": 1, "return_full_text": False}}
    )
    assert set(answer[0]) == {"generated_text"}
    assert not answer[0]["generated_text"].startswith("Hi")


def test_details_without_prefill(served: InferenceServer) -> None:
    answer = _ask(served, {"inputs": "Hi", "parameters": {"max_new_tokens": 1, "details": True}})
    assert answer[0]["details"]["prefill"] == []
