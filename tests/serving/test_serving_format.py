"""The serving format (llm_sft.serving_contract), file by file, and how the serving stack reads it.

Given transformers 5's files, the writer adds what transformers 4.x / TGI read, without changing
what transformers 5 reads; the reader (used by the local inference server) interprets a folder
the way the serving container does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_sft.serving_contract import (
    NotServable,
    make_servable,
    served_config,
    served_tokenizer_files,
    serving_config,
    serving_environment,
    serving_tokenizer_config,
)
from tests.serving.conftest import LLAMA3_ROPE

TRANSFORMERS5_TOKENIZER_CONFIG = {
    "backend": "tokenizers",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "extra_special_tokens": ["<|system|>", "<|user|>"],
    "model_max_length": 2048,
    "pad_token": "<pad>",
    "tokenizer_class": "TokenizersBackend",
}


def test_llama3_rope_gets_the_keys_transformers4_reads() -> None:
    config, changes = serving_config({"rope_parameters": dict(LLAMA3_ROPE), "dtype": "bfloat16"})
    assert config["rope_theta"] == 500000.0
    assert config["rope_scaling"] == {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256,
    }
    assert config["rope_parameters"] == LLAMA3_ROPE  # kept for transformers 5
    assert config["torch_dtype"] == "bfloat16"
    assert len(changes) == 3


def test_default_rope_has_no_scaling_and_partial_rotary_moves_up() -> None:
    config, _ = serving_config(
        {
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "partial_rotary_factor": 0.5,
            }
        }
    )
    assert config["rope_theta"] == 1e6
    assert config["partial_rotary_factor"] == 0.5
    assert config.get("rope_scaling") is None


def test_per_layer_rope_is_left_alone_with_a_warning() -> None:
    nested = {"full_attention": {"rope_type": "default", "rope_theta": 1e6}}
    config, changes = serving_config({"rope_parameters": nested})
    assert "rope_theta" not in config
    assert "rope_scaling" not in config
    assert changes
    assert changes[0].startswith("WARNING")


def test_serving_config_is_idempotent() -> None:
    once, _ = serving_config({"rope_parameters": dict(LLAMA3_ROPE), "dtype": "float32"})
    twice, changes = serving_config(once)
    assert twice == once
    assert changes == []


@pytest.mark.parametrize("rope", [LLAMA3_ROPE, {"rope_type": "default", "rope_theta": 123456.0}])
def test_transformers5_reads_the_serving_config_as_it_wrote_it(
    rope: dict[str, Any], tmp_path: Path
) -> None:
    from transformers import AutoConfig, LlamaConfig

    written = LlamaConfig(
        hidden_size=64, num_attention_heads=4, num_hidden_layers=1, rope_parameters=dict(rope)
    )
    written.save_pretrained(tmp_path)
    before = AutoConfig.from_pretrained(tmp_path).rope_parameters
    config, _ = serving_config(json.loads((tmp_path / "config.json").read_text()))
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert AutoConfig.from_pretrained(tmp_path).rope_parameters == before == rope


def test_tokenizer_config_for_transformers4_and_the_router() -> None:
    config, changes = serving_tokenizer_config(
        TRANSFORMERS5_TOKENIZER_CONFIG, chat_template="{{ x }}", has_tokenizer_json=True
    )
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["additional_special_tokens"] == ["<|system|>", "<|user|>"]
    assert "extra_special_tokens" not in config
    assert config["chat_template"] == "{{ x }}"
    assert len(changes) == 3


def test_named_extra_special_tokens_are_kept() -> None:
    named = {**TRANSFORMERS5_TOKENIZER_CONFIG, "extra_special_tokens": {"image_token": "<img>"}}
    config, _ = serving_tokenizer_config(named, chat_template=None, has_tokenizer_json=True)
    assert config["extra_special_tokens"] == {"image_token": "<img>"}


def test_a_tokenizer_without_tokenizer_json_is_flagged() -> None:
    _, changes = serving_tokenizer_config(
        TRANSFORMERS5_TOKENIZER_CONFIG, chat_template=None, has_tokenizer_json=False
    )
    assert any(c.startswith("WARNING") and "tokenizer.json" in c for c in changes)


def _transformers5_folder(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llama", "rope_parameters": LLAMA3_ROPE, "dtype": "bfloat16"})
    )
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(TRANSFORMERS5_TOKENIZER_CONFIG))
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    return tmp_path


def test_served_view_of_a_transformers5_folder_is_what_issue_16_saw(tmp_path: Path) -> None:
    folder = _transformers5_folder(tmp_path)
    view = served_config(json.loads((folder / "config.json").read_text()))
    assert "rope_theta" not in view
    assert "rope_scaling" not in view
    with pytest.raises(NotServable, match="TokenizersBackend"):
        served_tokenizer_files(folder)


def test_served_view_after_make_servable(tmp_path: Path) -> None:
    folder = _transformers5_folder(tmp_path)
    make_servable(folder)
    view = served_config(json.loads((folder / "config.json").read_text()))
    assert view["rope_theta"] == 500000.0
    assert view["rope_scaling"]["rope_type"] == "llama3"
    tokenizer_config, template = served_tokenizer_files(folder)
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert template == "{{ messages }}"
    assert serving_environment(folder) == {"ENABLE_PREFILL_LOGPROBS": "true", "DTYPE": "bfloat16"}
    assert make_servable(folder) == []  # idempotent


def test_router_prefers_chat_template_json(tmp_path: Path) -> None:
    folder = _transformers5_folder(tmp_path)
    make_servable(folder)
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": "standalone"}))
    assert served_tokenizer_files(folder)[1] == "standalone"


def test_requirements_command_prints_the_pins(capsys: pytest.CaptureFixture[str]) -> None:
    from llm_sft.serving_contract import SERVING_STACK, main

    assert main(["requirements"]) == 0
    assert capsys.readouterr().out.split() == SERVING_STACK.requirements()
    assert main([]) == 2


def test_the_smoke_test_reads_the_reference_the_training_code_writes() -> None:
    """The Lambda cannot import llm_sft (its asset is lambdas/): the names are checked here; the
    fields, by validating a real reference (test_serving_compat)."""
    from llm_sft.serving_contract import REFERENCE_FILE
    from llm_sft.serving_reference import REFERENCE_FORMAT, REFERENCE_MAX_TOKENS
    from smoke_test import logic

    assert logic.REFERENCE_FILE == REFERENCE_FILE
    assert logic.REFERENCE_FORMAT == REFERENCE_FORMAT
    assert REFERENCE_MAX_TOKENS < 2048  # the deployed container's MAX_INPUT_TOKENS
