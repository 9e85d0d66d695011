"""Loss masks: only assistant turns (chat) or the completion (prompt/completion) are learned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llm_sft.chat_template import DEFAULT_CHAT_TEMPLATE
from llm_sft.data import Example, Message, parse_row
from llm_sft.encoding import IGNORE_INDEX, encode_example, encode_examples, ensure_chat_template


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _learned_text(tokenizer: Any, ids: list[int], labels: list[int]) -> str:
    kept = [tok for tok, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    assert kept == [label for label in labels if label != IGNORE_INDEX]  # labels are the ids
    return str(tokenizer.decode(kept))


def test_chat_masks_everything_but_assistant_turns(tokenizer: Any) -> None:
    example = parse_row(
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "What is 2 + 3?"},
                {"role": "assistant", "content": "5"},
                {"role": "user", "content": "Reverse the word 'garden'."},
                {"role": "assistant", "content": "nedrag"},
            ]
        },
        "test:1",
    )
    encoded = encode_example(tokenizer, example, max_seq_length=512)
    assert not encoded.truncated
    # Every assistant token and the end-of-turn marker the template adds; nothing else.
    assert _learned_text(tokenizer, encoded.input_ids, encoded.labels) == "5</s>\nnedrag</s>\n"
    masked = [
        t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label == -100
    ]
    masked_text = tokenizer.decode(masked)
    for prompt_part in ("Answer briefly.", "What is 2 + 3?", "<|user|>", "<|assistant|>", "<s>"):
        assert prompt_part in masked_text
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in example.messages], tokenize=False
    )
    assert tokenizer.decode(encoded.input_ids) == rendered


def test_prompt_completion_masks_the_prompt(tokenizer: Any) -> None:
    example = Example(source="t:1", prompt="Question: What is 1 + 1?\nAnswer:", completion=" 2")
    encoded = encode_example(tokenizer, example, max_seq_length=512)
    assert _learned_text(tokenizer, encoded.input_ids, encoded.labels) == " 2</s>"
    assert encoded.input_ids[0] == tokenizer.bos_token_id
    assert encoded.input_ids[-1] == tokenizer.eos_token_id
    prompt_ids = tokenizer(example.prompt)["input_ids"]
    assert encoded.input_ids[: len(prompt_ids)] == prompt_ids
    assert set(encoded.labels[: len(prompt_ids)]) == {IGNORE_INDEX}


def test_truncation_is_counted_and_empty_targets_dropped(tokenizer: Any) -> None:
    long_answer = Example(
        source="t:1",
        messages=(Message("user", "hi"), Message("assistant", "garden " * 50)),
    )
    long_prompt = Example(source="t:2", prompt="river " * 80, completion=" x")
    dataset = encode_examples(
        tokenizer, [long_answer, long_prompt], max_seq_length=32, split="train"
    )
    assert dataset.truncated == 2
    assert dataset.dropped == 1  # the completion fell entirely beyond max_seq_length
    assert len(dataset.examples) == 1
    assert len(dataset.examples[0].input_ids) == 32


def test_default_template_for_tokenizers_without_one(tokenizer: Any) -> None:
    import copy

    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    assert ensure_chat_template(bare) is True
    assert bare.chat_template == DEFAULT_CHAT_TEMPLATE
    assert ensure_chat_template(bare) is False
