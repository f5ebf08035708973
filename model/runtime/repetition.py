"""Repetition control that leaves the prompt's code alone: DRY once the answer repeats itself.

DRY ("don't repeat yourself", llama.cpp's sampler) lowers the score of a token that would
extend a sequence already seen. Measured over the 103 loop prompts and all 164 HumanEval
problems (docs/performance.md): from the first token, DRY halves looping answers but also
penalises an answer for writing again what its prompt holds (a function's signature, its
names), and HumanEval pass@1 fell (12 → 7 of 164 over the whole window, 11 over the last 64
tokens). So the default engages DRY only where a loop begins:

- ``RepeatWatch`` follows the answer's text as it streams and says when a line or sentence of
  ``MIN_CHARS`` or more characters (whitespace collapsed) completes for the second time;
- from then on DRY applies, over the answer's own tokens only (the prompt is out of its
  window). torch: ``dry_penalties`` is subtracted from the logits from that step on, over
  the whole answer (``model.runtime.engine.Decoder``). llama.cpp has one window length per
  request: the request ends there and the answer goes on as new requests with DRY, each
  with the answer so far as its window and at most that many tokens long, so the window
  never reaches the prompt and doubles each time (``LlamaCppEngine.run``; the slot's cache
  keeps the prefix, so a new request costs one short prefill).

Answers that never repeat a line are exactly what DRY off gives. No torch here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Container, Sequence

MIN_CHARS = 20  # shorter lines ("return x", "}", "else:") repeat in good code
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")  # where a sentence ends inside a line

# llama.cpp's recommended multiplier, base and allowed length. Its default sequence
# breakers ("\n", ":", '"', "*") end a repeated sequence at each line, so a loop of whole
# lines is penalised a line at a time and lives on (3 of the 13 loop prompts that loop with
# DRY off still looped; none with a fence as the only breaker). DRY here runs only once the
# answer repeats itself, so a run of repeated lines counts as one sequence; a code fence
# ends it.
DRY_MULTIPLIER = 0.8
DRY_BASE = 1.75
DRY_ALLOWED_LENGTH = 2
DRY_BREAKERS = ("```",)


class RepeatWatch:
    """Fed the answer's text in pieces; ``feed`` turns True once a line or sentence of
    ``MIN_CHARS``+ characters has completed twice, and stays True."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._line = ""  # the line being written
        self._used = 0  # characters of it already taken as complete sentences
        self.repeated = False

    def feed(self, text: str) -> bool:
        if self.repeated or not text:
            return self.repeated
        self._line += text
        *lines, self._line = self._line.split("\n")
        for line in lines:
            self._take(line, finished=True)
        self._take(self._line, finished=False)
        return self.repeated

    def _take(self, line: str, finished: bool) -> None:
        """The units of ``line`` not taken yet: its sentences, and its rest once it ended."""
        pieces = SENTENCE_END.split(line[self._used:])
        for piece in pieces if finished else pieces[:-1]:
            self._unit(piece)
        self._used = 0 if finished else len(line) - len(pieces[-1])

    def _unit(self, piece: str) -> None:
        unit = " ".join(piece.split())
        if len(unit) < MIN_CHARS:
            return
        if unit in self._seen:
            self.repeated = True
        self._seen.add(unit)


def dry_penalties(tokens: Sequence[int], breakers: Container[int], multiplier: float = DRY_MULTIPLIER,
                  base: float = DRY_BASE, allowed_length: int = DRY_ALLOWED_LENGTH) -> dict[int, float]:
    """DRY as llama.cpp computes it, over ``tokens`` (the window: here the answer so far):
    for each earlier place where the sequence that ends the window also ended (matched
    backwards, stopping at a breaker token), the token that came next there gets
    ``multiplier * base ** (length - allowed_length)`` subtracted from its logit when the
    matched length is at least ``allowed_length`` (the longest match per token counts)."""
    n = len(tokens)
    if n < 2 or multiplier <= 0 or tokens[-1] in breakers:
        return {}
    last = tokens[-1]
    longest: dict[int, int] = {}
    for end in range(n - 2, -1, -1):
        if tokens[end] != last:
            continue
        length = 0
        while (length <= end and tokens[end - length] == tokens[n - 1 - length]
               and tokens[end - length] not in breakers):
            length += 1
        following = tokens[end + 1]
        if length >= allowed_length and length > longest.get(following, 0):
            longest[following] = length
    cap = int(math.log(1e30 / multiplier) / math.log(base)) if base > 1 else 0  # no overflow
    return {tok: multiplier * base ** min(length - allowed_length, cap) for tok, length in longest.items()}
