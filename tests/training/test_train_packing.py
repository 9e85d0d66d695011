"""Packed rows must compute exactly what each sample computes alone (no cross-attention)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llm_sft.encoding import IGNORE_INDEX, EncodedExample
from llm_sft.packing import build_rows, collate, pack_best_fit


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    loaded.eval()
    return loaded


def _samples(lengths: list[int], vocab: int) -> list[EncodedExample]:
    import torch

    generator = torch.Generator().manual_seed(0)
    samples = []
    for length in lengths:
        ids = torch.randint(10, vocab, (length,), generator=generator).tolist()
        labels = [IGNORE_INDEX, *ids[1:]]
        samples.append(EncodedExample(input_ids=ids, labels=labels, truncated=False))
    return samples


def test_packed_logits_equal_separate_logits(model: Any) -> None:
    import torch

    samples = _samples([13, 9, 6, 21, 4], model.config.vocab_size)
    rows = build_rows(samples, max_seq_length=32, packing=True)
    assert len(rows) < len(samples)  # something was actually packed
    batch = collate(rows, pad_token_id=0)  # several rows: padding is exercised too
    with torch.no_grad():
        packed = model(
            **{k: batch[k] for k in ("input_ids", "position_ids")}, use_cache=False
        ).logits
        for row_index, row in enumerate(rows):
            start = 0
            for sample_len in _segment_lengths(row.position_ids):
                ids = torch.tensor([row.input_ids[start : start + sample_len]])
                alone = model(input_ids=ids, use_cache=False).logits[0]
                got = packed[row_index, start : start + sample_len]
                torch.testing.assert_close(got, alone, atol=1e-4, rtol=1e-4)
                start += sample_len


def test_with_a_cache_packed_samples_would_leak(model: Any) -> None:
    """Documents why the trainer passes use_cache=False (see PITFALLS)."""
    import torch

    first, second = _samples([12, 8], model.config.vocab_size)
    ids = torch.tensor([first.input_ids + second.input_ids])
    positions = torch.tensor([list(range(12)) + list(range(8))])
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([second.input_ids]), use_cache=False).logits[0]
        no_cache = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0, 12:]
        cached = model(input_ids=ids, position_ids=positions, use_cache=True).logits[0, 12:]
    torch.testing.assert_close(no_cache, alone, atol=1e-4, rtol=1e-4)
    assert (cached - alone).abs().max() > 1e-2


def test_loss_over_packed_rows_matches_separate_losses(model: Any) -> None:
    """Labels at sample boundaries are ignored: the packed loss is the token-weighted mean."""
    import torch

    samples = _samples([10, 7, 5], model.config.vocab_size)
    packed = collate(build_rows(samples, 64, packing=True), pad_token_id=0)
    with torch.no_grad():
        packed_loss = model(**packed, use_cache=False).loss
        total, count = 0.0, 0
        for sample in samples:
            single = collate(build_rows([sample], 64, packing=False), pad_token_id=0)
            tokens = int((single["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(model(**single, use_cache=False).loss) * tokens
            count += tokens
    assert float(packed_loss) == pytest.approx(total / count, abs=1e-5)


def _segment_lengths(positions: list[int]) -> list[int]:
    lengths: list[int] = []
    for position in positions:
        if position == 0:
            lengths.append(0)
        lengths[-1] += 1
    return lengths


def test_best_fit_packing() -> None:
    lengths = [7, 3, 5, 2, 8, 1, 4]
    bins = pack_best_fit(lengths, capacity=10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 3  # 30 tokens in bins of 10: optimal here
    with pytest.raises(ValueError, match="exceeds capacity"):
        pack_best_fit([11], capacity=10)


def test_collate_pads_as_a_separate_segment() -> None:
    rows = build_rows(
        [
            EncodedExample([5, 6, 7], [IGNORE_INDEX, 6, 7], False),
            EncodedExample([8], [IGNORE_INDEX], False),
        ],
        max_seq_length=8,
        packing=False,
    )
    batch = collate(rows, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [IGNORE_INDEX] * 3]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]
