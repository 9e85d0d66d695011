"""Turning validated examples into token ids and loss labels.

Labels follow the Hugging Face convention (aligned with `input_ids`; the model shifts them):
`IGNORE_INDEX` everywhere except the tokens the model must learn to produce, i.e. assistant
turns (including the end-of-turn marker the template appends) or the completion plus EOS.

Chat rows are rendered with the tokenizer's chat template. The assistant spans are located on
the rendered *text* by rendering prefixes of the conversation (string comparison is exact,
unlike comparing token prefixes) and mapped to tokens with the fast tokenizer's offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llm_sft.chat_template import DEFAULT_CHAT_TEMPLATE
from llm_sft.data import Example, Message
from llm_sft.errors import DataError

IGNORE_INDEX = -100

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def trainable_tokens(self) -> int:
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


@dataclass(frozen=True)
class EncodedDataset:
    examples: list[EncodedExample]
    truncated: int  # rows cut at max_seq_length (kept if they still have trainable tokens)
    dropped: int  # rows with no trainable token left after truncation

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give template-less tokenizers the documented default; True when it was applied."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    logger.info("tokenizer has no chat template: using the default template (see README)")
    return True


def _render(tokenizer: Any, messages: Sequence[Message], generation_prompt: bool) -> str:
    conversation = [{"role": m.role, "content": m.content} for m in messages]
    text = tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=generation_prompt
    )
    if not isinstance(text, str):
        raise TypeError("apply_chat_template(tokenize=False) did not return a string")
    return text


def _span_by_prefix(
    tokenizer: Any, messages: Sequence[Message], index: int, full: str
) -> tuple[int, int] | None:
    """Span of assistant turn `index` from prefix renderings, if the template allows it."""
    if index == 0:
        return None
    before = _render(tokenizer, messages[:index], generation_prompt=True)
    through = _render(tokenizer, messages[: index + 1], generation_prompt=False)
    if full.startswith(before) and full.startswith(through) and len(through) > len(before):
        return len(before), len(through)
    return None


def _span_by_search(
    tokenizer: Any, example: Example, index: int, full: str, cursor: int
) -> tuple[int, int]:
    # Templates that rewrite earlier turns (e.g. drop reasoning) break the prefix property;
    # fall back to finding the content verbatim, plus an EOS right after it.
    content = example.messages[index].content
    start = full.find(content, cursor)
    if start < 0:
        raise DataError(
            f"{example.source}: the chat template does not render assistant turn {index}"
            " verbatim; cannot locate it for the loss mask"
        )
    end = start + len(content)
    eos = getattr(tokenizer, "eos_token", None)
    if eos and full.startswith(eos, end):
        end += len(eos)
    return start, end


def assistant_spans(tokenizer: Any, example: Example) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    messages = example.messages
    try:
        full = _render(tokenizer, messages, generation_prompt=False)
        spans: list[tuple[int, int]] = []
        cursor = 0
        for index, message in enumerate(messages):
            if message.role != "assistant":
                continue
            span = _span_by_prefix(tokenizer, messages, index, full)
            if span is None or span[0] < cursor:
                span = _span_by_search(tokenizer, example, index, full, cursor)
            spans.append(span)
            cursor = span[1]
    except DataError:
        raise
    except Exception as error:  # jinja2 TemplateError and friends: the template rejects the row
        raise DataError(
            f"{example.source}: the model's chat template rejected this conversation: {error}"
        ) from None
    return full, spans


def _tokenize_with_spans(
    tokenizer: Any, text: str, spans: Sequence[tuple[int, int]]
) -> tuple[list[int], list[bool]]:
    """Token ids of `text` and, per token, whether it overlaps a trainable character span."""
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        flags = [
            any(tok_end > start and tok_start < end for start, end in spans)
            for tok_start, tok_end in encoded["offset_mapping"]
        ]
        return ids, flags
    # Slow tokenizers have no offsets: tokenize segment by segment.
    ids, flags = [], []
    cursor = 0
    for start, end in [*spans, (len(text), len(text))]:
        for piece, trainable in ((text[cursor:start], False), (text[start:end], True)):
            if piece:
                piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
                ids.extend(piece_ids)
                flags.extend([trainable] * len(piece_ids))
        cursor = end
    return ids, flags


def _encode_prompt_completion(tokenizer: Any, example: Example) -> tuple[list[int], list[bool]]:
    assert example.prompt is not None
    assert example.completion is not None
    prompt_ids = list(tokenizer(example.prompt, add_special_tokens=True)["input_ids"])
    eos_id = tokenizer.eos_token_id
    # Some tokenizers append EOS to every encoding; the prompt must not end the sequence.
    if eos_id is not None and prompt_ids and prompt_ids[-1] == eos_id:
        prompt_ids = prompt_ids[:-1]
    completion_ids = list(tokenizer(example.completion, add_special_tokens=False)["input_ids"])
    if eos_id is not None:
        completion_ids.append(eos_id)
    ids = prompt_ids + completion_ids
    return ids, [False] * len(prompt_ids) + [True] * len(completion_ids)


def encode_example(tokenizer: Any, example: Example, max_seq_length: int) -> EncodedExample:
    if example.is_chat:
        text, spans = assistant_spans(tokenizer, example)
        ids, flags = _tokenize_with_spans(tokenizer, text, spans)
    else:
        ids, flags = _encode_prompt_completion(tokenizer, example)
    truncated = len(ids) > max_seq_length
    ids, flags = ids[:max_seq_length], flags[:max_seq_length]
    labels = [tok if flag else IGNORE_INDEX for tok, flag in zip(ids, flags, strict=True)]
    if labels:
        # The first token is never a target: in a packed row it follows another sample.
        labels[0] = IGNORE_INDEX
    return EncodedExample(input_ids=ids, labels=labels, truncated=truncated)


def encode_examples(
    tokenizer: Any, examples: Sequence[Example], max_seq_length: int, split: str
) -> EncodedDataset:
    encoded: list[EncodedExample] = []
    truncated = dropped = 0
    for example in examples:
        item = encode_example(tokenizer, example, max_seq_length)
        truncated += item.truncated
        if item.trainable_tokens == 0:
            dropped += 1
            continue
        encoded.append(item)
    if truncated:
        logger.warning(
            "%s: %d of %d samples were longer than max_seq_length=%d and were truncated",
            split,
            truncated,
            len(examples),
            max_seq_length,
        )
    if dropped:
        logger.warning(
            "%s: dropped %d samples with no trainable token within max_seq_length=%d",
            split,
            dropped,
            max_seq_length,
        )
    if examples and not encoded:
        raise DataError(
            f"{split}: no sample has a trainable token within max_seq_length={max_seq_length}"
        )
    return EncodedDataset(examples=encoded, truncated=truncated, dropped=dropped)
