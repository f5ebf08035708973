"""Chat first on llama.cpp: the settings and the clock of a code completion's prompt steps.

llama.cpp puts every slot's work into one batch per step, so a completion's whole prompt
would hold a streaming chat's next token back for the whole prefill (seconds on a CPU);
``LlamaCppScheduler._prefill_aside`` feeds it in steps instead and gives the chat rests
between them (docs/performance.md, "Code completions next to a streaming chat"). The
numbers are fields of ``Pacing``; the scheduler reads time through a ``Clock``, which a
test replaces with one it moves itself (with a scripted engine), so pacing is tested as an
order of events, not by the wall clock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Pacing:
    #: While a chat streams, a completion's prompt goes in steps of at most this many new
    #: tokens, the chat decoding on its own between two steps.
    prefill_chunk: int = 32
    #: Without a chat, in steps of this many: a chat that starts meanwhile waits for one such
    #: step, not for a whole window (~1,000 tokens, 3-4 s of prompt work on 2 cores).
    prefill_step_alone: int = 64
    #: ... and the chat has the machine to itself for this many times as long as a step took,
    #: so completion prompts take at most 1/(1+x) of a streaming chat's time (9: 10%).
    chat_rest_factor: float = 9.0
    #: Chat tokens seen between two such steps: two, since the chat's token from the step that
    #: carried the chunk may arrive after the chunk's own answer.
    chat_tokens_between_chunks: int = 2
    #: The rest after a completion's answer is capped: one whose long prompt went before the
    #: chat began would otherwise keep every completion away for the rest of a long chat.
    chat_rest_max_s: float = 2.0
    #: A chat in its own prefill sends no tokens: do not wait for its tokens for ever.
    chat_step_wait_s: float = 5.0


class Clock:
    """Monotonic time, and waiting on the scheduler's condition for at most a span of it."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        """Wait on ``cond`` (held) until notified or ``timeout`` seconds of this clock pass."""
        cond.wait(timeout)


def reusable_start(cached: list[int], ids: list[int], reuse: int | None = None) -> int:
    """How many leading tokens of ``ids`` llama.cpp can take from a slot that holds ``cached``:
    their common start, then what follows a chunk of at least ``reuse`` tokens found further
    on in the cache (llama.cpp shifts such chunks: ``n_cache_reuse``), as when a completion
    window's start moved by a step."""
    if reuse is None:
        from ...runtime.llamacpp_engine import CACHE_REUSE

        reuse = CACHE_REUSE
    start = common_prefix(cached, ids)
    if len(ids) - start < reuse:
        return start
    probe = ids[start : start + reuse]
    first = probe[0]
    for j in range(start, len(cached) - reuse + 1):
        if cached[j] == first and cached[j : j + reuse] == probe:
            return start + common_prefix(cached[j:], ids[start:])
    return start


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
