"""Padding-free sequence packing and batch collation.

Samples are packed into rows of at most `max_seq_length` tokens with best-fit-decreasing.
Within a row, `position_ids` restart at 0 for every sample, and no attention mask is passed:
transformers (>= 4.5x, verified on 5.x for sdpa and eager) then derives a block-diagonal causal
mask from the position restarts, so packed samples never attend to each other. This holds
only when the model runs with `use_cache=False` -- with a cache object the position-based
detection is skipped and samples leak into each other; the trainer always passes it.

Rows of one micro-batch are right-padded to the longest row; the padding gets its own position
run (0, 1, ...) so it forms a separate "sample" that nothing real attends to, and label -100.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llm_sft.encoding import IGNORE_INDEX, EncodedExample

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Row:
    """One model input row: one or more samples back to back."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def label_tokens(self) -> int:
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


def pack_best_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of total length <= capacity (best-fit decreasing).

    Deterministic for given lengths; every length must be <= capacity.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # Parallel sorted lists of (remaining capacity, bin index) for O(log n) best-fit lookups.
    free: list[tuple[int, int]] = []
    for index in order:
        size = lengths[index]
        if size > capacity:
            raise ValueError(f"sample of {size} tokens exceeds capacity {capacity}")
        slot = bisect.bisect_left(free, (size, -1))
        if slot < len(free):
            remaining, bin_index = free.pop(slot)
            bins[bin_index].append(index)
            remaining -= size
        else:
            bin_index = len(bins)
            bins.append([index])
            remaining = capacity - size
        if remaining > 0:
            bisect.insort(free, (remaining, bin_index))
    return bins


def pack_length(max_seq_length: int, lengths: Sequence[int], hidden_size: int | None) -> int:
    """Row capacity: `max_seq_length`, or shorter when every sample is much shorter.

    sdpa and eager attention compute the dense block-diagonal mask of a row, so attention costs
    grow with the row length L (about L/(3*hidden) of the linear layers' cost) although no
    sample attends beyond itself. Rows of max(longest sample, hidden_size) tokens keep that
    share small; for real models (hidden >= 2048) this is simply `max_seq_length`.
    """
    longest = max(lengths, default=1)
    if hidden_size is None:
        return max_seq_length
    return min(max_seq_length, max(longest, hidden_size))


def _row(samples: Sequence[EncodedExample]) -> Row:
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for sample in samples:
        ids.extend(sample.input_ids)
        labels.extend(sample.labels)
        positions.extend(range(len(sample.input_ids)))
    return Row(input_ids=ids, labels=labels, position_ids=positions)


def build_rows(examples: Sequence[EncodedExample], max_seq_length: int, packing: bool) -> list[Row]:
    """Packed rows (or one row per sample when packing is off), in a deterministic order."""
    if not packing:
        return [_row([e]) for e in examples]
    bins = pack_best_fit([len(e.input_ids) for e in examples], max_seq_length)
    # Restore data order inside and across bins so that row order does not follow length.
    bins = sorted((sorted(b) for b in bins), key=lambda b: b[0])
    return [_row([examples[i] for i in b]) for b in bins]


def collate(
    rows: Sequence[Row], pad_token_id: int, pad_to_multiple_of: int = 1
) -> dict[str, torch.Tensor]:
    """`input_ids`, `labels`, `position_ids` tensors of shape [len(rows), longest row].

    `pad_to_multiple_of` rounds the width up (GPU: fewer distinct shapes for compiled kernels
    such as flex_attention's, and tensor-core-friendly sizes); padding never reaches the loss.
    """
    import torch

    width = max(len(r) for r in rows)
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids, labels, positions = [], [], []
    for row in rows:
        pad = width - len(row)
        ids.append(row.input_ids + [pad_token_id] * pad)
        labels.append(row.labels + [IGNORE_INDEX] * pad)
        positions.append(row.position_ids + list(range(pad)))
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "position_ids": torch.tensor(positions, dtype=torch.long),
    }
