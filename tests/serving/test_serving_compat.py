"""What is served is what was trained: the serving stack reads the trained folder as training did.

A real training job (tiny Llama with Llama 3's rope: theta 500000, llama3 scaling) writes its
merged model; the serving container's transformers/tokenizers (their pinned versions, in the
environment `make setup-serving` builds) load it in a separate process and must agree with the
training stack on:

- token ids, exactly, through the Python tokenizer and through TGI's router path;
- the chat template the router reads, and every rendering, exactly;
- next-token logits on a long input (hundreds of positions, past the rope scaling's original
  context), within ``LOGITS_ATOL`` (both sides float32 on the same CPU and torch, so only the
  libraries' interpretation of the folder can differ; measured differences are ~1e-6);
- the reference example the smoke test uses, scored per token, within ``LOGITS_ATOL`` of what
  the training job recorded, and passing the smoke test's own comparison.

The same folder as transformers 5 writes it (before the serving format) is read by the same
probe as a control: the test shows that the tokenizer does not load and the rope falls back to
theta 10000, i.e. that this test would have caught issue 16.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.serving.conftest import (
    EXAMPLES,
    LLAMA3_ROPE,
    SERVING_ENV,
    Probe,
    TrainedModel,
    read_rows,
)

pytestmark = [pytest.mark.slow, pytest.mark.serving_contract]

#: float32 on both sides, same CPU, same torch: only the folder's interpretation can differ.
LOGITS_ATOL = 1e-4
LONG_INPUT_TOKENS = 600

TEXTS = [
    "Hello world",
    "  leading and trailing spaces  ",
    "naïve café — Tōkyō 東京 🙂 tabs\tand\nnewlines",
    "<|user|>\nWhat is 2 + 2?</s>\n<|assistant|>\n4</s>\n",
    "<s>already has a BOS",
]


def _conversations() -> list[list[dict[str, str]]]:
    rows = read_rows(EXAMPLES / "chat" / "validation.jsonl", 2)
    conversations = [row["messages"] for row in rows]
    conversations.append([{"role": "user", "content": "Only a question?"}])
    return conversations


def _long_text(tokenizer: Any) -> str:
    """Chat contents joined until the text is at least LONG_INPUT_TOKENS tokens long."""
    parts: list[str] = []
    for row in read_rows(EXAMPLES / "chat" / "train.jsonl", 400):
        parts += [m["content"] for m in row["messages"]]
        text = "\n".join(parts)
        if len(tokenizer(text)["input_ids"]) >= LONG_INPUT_TOKENS:
            return text
    raise AssertionError("the example data is too short for the long input")


@pytest.fixture(scope="module")
def compat(
    trained_llama3: TrainedModel, run_probe: Probe, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Both stacks' readings of the trained folder (and of the control folder)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = trained_llama3.model_dir
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    work = tmp_path_factory.mktemp("probe")
    # The control: the same model and tokenizer as transformers 5 writes them.
    control = work / "as-written-by-transformers5"
    model.save_pretrained(control)
    tokenizer.save_pretrained(control)

    reference = trained_llama3.reference()
    long_text = _long_text(tokenizer)
    conversations = _conversations()
    training_long_ids = tokenizer(long_text)["input_ids"]
    with torch.no_grad():
        training_logits = model(input_ids=torch.tensor([training_long_ids])).logits[0].float()
    spec = {
        "folders": {"trained": str(model_dir), "control": str(control)},
        "texts": [*TEXTS, reference["inputs"]],
        "conversations": conversations,
        "long_text": long_text,
        "fallback_long_ids": training_long_ids,
        "reference_ids": reference["input_ids"],
    }
    served = run_probe(spec, work)
    return {
        "served": served,
        "work": work,
        "reference": reference,
        "training": {
            "config": model.config,
            "ids": [tokenizer(t)["input_ids"] for t in spec["texts"]],
            "chat_template": tokenizer.chat_template,
            "chat": [
                tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=g)
                for c in conversations
                for g in (False, True)
            ],
            "long_ids": training_long_ids,
            "logits": training_logits,
        },
    }


def _logits(compat: dict[str, Any], name: str) -> Any:
    import torch

    return torch.load(Path(compat["work"]) / f"logits-{name}.pt")


def test_the_probe_ran_the_serving_stack_pins(compat: dict[str, Any]) -> None:
    from llm_sft.serving_contract import SERVING_STACK

    versions = compat["served"]["versions"]
    assert {k: versions[k] for k in SERVING_STACK.packages} == dict(SERVING_STACK.packages)
    assert versions["transformers_file"].startswith(str(SERVING_ENV))


def test_serving_stack_reads_the_trained_rope(compat: dict[str, Any]) -> None:
    served = compat["served"]["folders"]["trained"]
    assert "error" not in served, served.get("error")
    assert served["rope_theta"] == LLAMA3_ROPE["rope_theta"]
    expected_scaling = {k: v for k, v in LLAMA3_ROPE.items() if k != "rope_theta"}
    assert {k: served["rope_scaling"][k] for k in expected_scaling} == expected_scaling
    # ... which is what training used.
    assert compat["training"]["config"].rope_parameters == LLAMA3_ROPE


def test_serving_tokenizer_gives_the_training_ids(compat: dict[str, Any]) -> None:
    served = compat["served"]["folders"]["trained"]
    assert "tokenizer_error" not in served, served["tokenizer_error"]
    assert served["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert served["ids"] == compat["training"]["ids"]
    assert served["router_ids"] == compat["training"]["ids"]  # TGI's Rust-tokenizer path
    # The reference's text tokenizes, special tokens added as TGI does, to the training ids.
    assert served["ids"][-1] == compat["reference"]["input_ids"]


def test_serving_renders_the_training_chat_template(compat: dict[str, Any]) -> None:
    served = compat["served"]["folders"]["trained"]
    assert served["router_chat_template"] == compat["training"]["chat_template"]
    assert served["chat"] == compat["training"]["chat"]


def test_serving_logits_equal_training_logits_on_a_long_input(compat: dict[str, Any]) -> None:
    served = compat["served"]["folders"]["trained"]
    assert served["long_ids"] == compat["training"]["long_ids"]
    assert len(served["long_ids"]) >= LONG_INPUT_TOKENS
    difference = (_logits(compat, "trained") - compat["training"]["logits"]).abs().max().item()
    assert difference <= LOGITS_ATOL, f"max |Δlogit| {difference:.3g} > {LOGITS_ATOL}"


def test_serving_scores_the_reference_as_training_did(compat: dict[str, Any]) -> None:
    from smoke_test.logic import LossTolerance, ServingReference, compare_with_reference

    reference = compat["reference"]
    served = compat["served"]["folders"]["trained"]["reference_logprobs"]
    assert served[0] is None
    assert reference["token_logprobs"][0] is None
    worst = max(
        abs(a - b) for a, b in zip(served[1:], reference["token_logprobs"][1:], strict=True)
    )
    assert worst <= LOGITS_ATOL, f"max |Δlogprob| {worst:.3g} > {LOGITS_ATOL}"
    # The deployed smoke test's comparison, on TGI's response shape, passes - even exact.
    answer = [
        {
            "generated_text": "",
            "details": {
                "prefill": [
                    {"id": i, "text": "", "logprob": p}
                    for i, p in zip(reference["input_ids"], served, strict=True)
                ]
            },
        }
    ]
    exact = LossTolerance(absolute=LOGITS_ATOL, relative=0.0)
    result = compare_with_reference(
        ServingReference.model_validate(reference), answer, tolerance=exact
    )
    assert result["scored_tokens"] == len(reference["target_positions"])


def test_the_control_shows_what_transformers5_folders_did_to_serving(
    compat: dict[str, Any],
) -> None:
    """Issue 16, reproduced: without the serving format the tokenizer fails, rope is wrong."""
    control = compat["served"]["folders"]["control"]
    assert "TokenizersBackend" in control["tokenizer_error"]
    assert control["rope_theta"] == 10000  # the default the container falls back to
    assert control["rope_scaling"] is None
    difference = (_logits(compat, "control") - compat["training"]["logits"]).abs().max().item()
    assert difference > 100 * LOGITS_ATOL, "rope should visibly change a long input's logits"


def test_the_manifest_states_both_sides(trained_llama3: TrainedModel) -> None:
    from llm_sft.serving_contract import MANIFEST_FILE, SERVING_STACK

    manifest = json.loads((trained_llama3.model_dir / MANIFEST_FILE).read_text())
    assert manifest["serving_stack"]["packages"] == dict(SERVING_STACK.packages)
    assert manifest["training_stack"]["transformers"].startswith("5.")
    assert manifest["serving_environment"]["ENABLE_PREFILL_LOGPROBS"] == "true"
    assert manifest["reference"] == "serving_reference.json"
    assert manifest["original"]["tokenizer_class"] == "TokenizersBackend"
