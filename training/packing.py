"""Packing several dialogues into fixed-length rows, with no attention across dialogues.

Rows are filled best-fit-decreasing. Each packed row carries ``position_ids`` that restart
at 0 for every dialogue and no 2-D ``attention_mask``: transformers then derives one
sequence per run of consecutive positions and builds a block-diagonal causal mask (SDPA,
eager, flex) or calls FlashAttention's varlen kernel, so a dialogue never sees its
neighbours. The padding tail is one more "sequence" with labels -100. The first label of
every dialogue is forced to -100 so no token is trained to predict the next dialogue.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import torch

from training.tokenize import IGNORE_INDEX


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group item indices into bins of ``capacity``: longest first, each into the fullest bin it fits."""
    if capacity < 1:
        raise ValueError(f"capacity must be positive, got {capacity}.")
    too_long = [n for n in lengths if n > capacity]
    if too_long:
        raise ValueError(f"an item of length {too_long[0]} exceeds the row capacity {capacity}.")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # Sorted (remaining space, bin number) pairs: bisect finds the tightest bin that fits.
    free: list[tuple[int, int]] = []
    for i in order:
        need = lengths[i]
        at = bisect.bisect_left(free, (need, -1))
        if at == len(free):
            bins.append([i])
            bisect.insort(free, (capacity - need, len(bins) - 1))
        else:
            space, b = free.pop(at)
            bins[b].append(i)
            bisect.insort(free, (space - need, b))
    return bins


def pack_examples(examples: Sequence[dict], max_seq_length: int) -> list[dict]:
    """Pack tokenized examples into rows of at most ``max_seq_length`` tokens (unpadded).

    Each row has ``input_ids``, ``labels`` and ``position_ids`` (restarting per example).
    """
    lengths = [len(e["input_ids"]) for e in examples]
    rows = []
    for group in best_fit_decreasing(lengths, max_seq_length):
        row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
        for i in sorted(group):  # keep data order inside a row; it does not affect the loss
            ids, labels = examples[i]["input_ids"], list(examples[i]["labels"])
            labels[0] = IGNORE_INDEX
            row["input_ids"] += ids
            row["labels"] += labels
            row["position_ids"] += list(range(len(ids)))
        rows.append(row)
    return rows


def packing_efficiency(rows: Sequence[dict], max_seq_length: int) -> float:
    """Real tokens divided by the capacity of the rows (1.0 = no padding at all)."""
    if not rows:
        return 0.0
    return sum(len(r["input_ids"]) for r in rows) / (len(rows) * max_seq_length)


class PackedCollator:
    """Pads packed rows to a common length for a batch.

    Padding continues ``position_ids`` as one more sequence (0, 1, 2, …) so it forms its
    own block and never joins a real dialogue; its labels are -100.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: Sequence[dict]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
        for r in rows:
            pad = width - len(r["input_ids"])
            batch["input_ids"].append(list(r["input_ids"]) + [self.pad_token_id] * pad)
            batch["labels"].append(list(r["labels"]) + [IGNORE_INDEX] * pad)
            batch["position_ids"].append(list(r["position_ids"]) + list(range(pad)))
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


class PaddingCollator:
    """Plain right padding, one dialogue per row, with a 2-D attention mask (no packing)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: Sequence[dict]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
        for r in rows:
            n, pad = len(r["input_ids"]), width - len(r["input_ids"])
            batch["input_ids"].append(list(r["input_ids"]) + [self.pad_token_id] * pad)
            batch["labels"].append(list(r["labels"]) + [IGNORE_INDEX] * pad)
            batch["attention_mask"].append([1] * n + [0] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
