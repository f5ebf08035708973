"""Next-token choice from a logits vector, in plain torch.

This exists so that the model worker can decode without importing transformers (slow to
import and heavy). It reproduces, value for value, what transformers' processors do in
the order the engine used them: ``RepetitionPenaltyLogitsProcessor``, then
``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and ``TopPLogitsWarper`` (the last three
only when sampling). Greedy (temperature 0) is the argmax after the repetition penalty;
sampling is a softmax in fp32 and ``torch.multinomial``, with a generator seeded by
``seed`` when one is given.

``Sampler.choose`` is called once per generated token: with no penalty and no warpers it
is a bare argmax, and the history is only turned into a tensor when a penalty needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

FILTERED = -float("inf")


class Sampler:
    """Picks tokens for one request. ``params`` needs ``temperature``, ``top_p``,
    ``top_k`` (0 = off), ``repetition_penalty`` (1.0 = off) and ``seed`` (None = global RNG)."""

    def __init__(self, params: Any, device: str | torch.device = "cpu"):
        self.temperature = float(params.temperature)
        self.greedy = self.temperature <= 0
        self.penalty = float(params.repetition_penalty)
        self.needs_history = self.penalty != 1.0  # callers may skip building the history
        self.top_k = 0 if self.greedy else int(params.top_k or 0)
        self.top_p = 1.0 if self.greedy else float(params.top_p)
        self.generator = None
        if params.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(params.seed)

    def process(self, logits: torch.Tensor, history: Sequence[int]) -> torch.Tensor:
        """The scores after penalty and warpers (filtered tokens are -inf); 1-D [vocab]."""
        scores = logits.reshape(-1)
        vocab = scores.shape[0]
        if self.penalty != 1.0:
            ids = [i for i in set(history) if 0 <= i < vocab]
            if ids:
                index = torch.tensor(ids, device=scores.device)
                picked = scores[index]
                scores = scores.clone()
                scores[index] = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        if self.greedy:
            return scores
        scores = scores / self.temperature
        if self.top_k:
            threshold = torch.topk(scores, min(self.top_k, vocab))[0][-1]
            scores = scores.masked_fill(scores < threshold, FILTERED)
        if self.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=False)
            remove = sorted_scores.softmax(dim=-1).cumsum(dim=-1) <= (1 - self.top_p)
            remove[-1:] = False  # keep at least one token
            scores = scores.masked_fill(remove.scatter(0, order, remove), FILTERED)
        return scores

    def choose(self, logits: torch.Tensor, history: Sequence[int]) -> int:
        """The next token id for 1-D ``logits`` given prompt + generated ids so far."""
        scores = self.process(logits, history)
        if self.greedy:
            return int(scores.argmax())
        probs = torch.softmax(scores.float(), dim=-1).unsqueeze(0)
        return int(torch.multinomial(probs, 1, generator=self.generator)[0, 0])
