"""Code completions in the worker: the ``fim`` request, and chat first in the scheduler.

The scheduler runs in this process on the real embedded model; its ``trace`` records every
step (one forward pass each), so the interleaving is asserted as an order, not a time.
"""

from __future__ import annotations

import queue
import threading

import pytest

from model.serving.worker import Job, Scheduler, build_prompt, plan_round

CHAT = {"messages": [{"role": "user", "content": "Write a Python function is_even(n)."}],
        "params": {"max_new_tokens": 40}}
CODE = "import os\n\n\ndef read_lines(path):\n    with open(path) as f:\n        return "


def fim(prefix: str = CODE, **extra) -> dict:
    return {"fim": {"prefix": prefix, "suffix": "\n", "path": "a.py", **extra},
            "params": {"max_new_tokens": 8}}


@pytest.fixture()
def scheduler(loaded):
    sched = Scheduler("default", load=lambda spec: loaded)
    sched.trace = []
    sched.start()
    assert sched.ready.wait(120) and sched.load_error is None
    return sched  # a daemon thread; it idles once its jobs are done


class Collector:
    """The frames of several jobs in the order the scheduler emitted them."""

    def __init__(self) -> None:
        self.frames: queue.Queue = queue.Queue()
        self.done: dict = {}
        self.lock = threading.Lock()

    def emit_for(self, name: str):
        def emit(frame: dict) -> None:
            self.frames.put((name, frame))
        return emit

    def wait(self, names: set, timeout: float = 300) -> list:
        seen = []
        finished: set = set()
        while finished != names:
            name, frame = self.frames.get(timeout=timeout)
            seen.append((name, frame))
            if frame["type"] in ("done", "error"):
                finished.add(name)
        return seen


def test_fim_request_is_prompt_ids_of_the_prefix(scheduler):
    tok = scheduler.engine.tokenizer
    ids, truncated, params = build_prompt(scheduler.engine, fim())
    assert params.max_new_tokens == 8 and truncated == []
    # SmolLM2 has no FIM tokens: a prefix-only continuation of the text before the cursor.
    assert tok.decode(ids) == CODE
    ids, truncated, _ = build_prompt(scheduler.engine, fim(CODE * 10, context_tokens=64))
    assert len(ids) == 64 and truncated == ["prefix"]  # cut from the left
    assert tok.decode(ids).endswith(CODE)
    with pytest.raises(ValueError, match="fim.files"):
        build_prompt(scheduler.engine, fim(files="b.py"))
    with pytest.raises(ValueError, match="context_tokens"):
        build_prompt(scheduler.engine, fim(context_tokens=5))


def test_completion_streams_a_continuation(scheduler):
    c = Collector()
    scheduler.submit(Job((1, "c"), fim(), c.emit_for("c")))
    frames = c.wait({"c"})
    done = frames[-1][1]
    assert done["type"] == "done" and done["usage"]["tokens"] >= 1
    text = "".join(f["text"] for _, f in frames if f["type"] == "delta")
    expected = "".join(scheduler.engine.generate(build_prompt(scheduler.engine, fim())[0], {"max_new_tokens": 8}))
    assert text == expected and text.strip()


def test_a_completion_delays_a_streaming_chat_by_at_most_one_step(scheduler):
    c = Collector()
    scheduler.submit(Job((1, "chat"), CHAT, c.emit_for("chat")))
    name, frame = c.frames.get(timeout=300)  # the chat is streaming
    assert name == "chat" and frame["type"] == "delta"
    start = len(scheduler.trace)
    # Two completions with long prompts: each prefill is one (long) step.
    long_prefix = CODE * 20
    scheduler.submit(Job((1, "c1"), fim(long_prefix), c.emit_for("c1")))
    scheduler.submit(Job((1, "c2"), fim(long_prefix + "x = 1\n"), c.emit_for("c2")))
    frames = [(name, frame)] + c.wait({"chat", "c1", "c2"})
    assert all(f["type"] == "done" for _, f in frames if f["type"] in ("done", "error"))

    steps = scheduler.trace[start:]
    chat_done_at = max(i for i, (_, keys) in enumerate(steps) if _has(keys, "chat"))
    gap = 0
    for _kind, keys in steps[:chat_done_at]:
        if _has(keys, "chat"):
            gap = 0
        else:
            gap += 1
            assert gap <= 1, f"two completion steps in a row while the chat streamed: {steps}"
    # The completions did run while the chat streamed, and finished.
    assert any(not _has(keys, "chat") for _, keys in steps[:chat_done_at])
    assert {"c1", "c2"} <= {n for n, f in frames if f["type"] == "done"}


def _has(keys, name: str) -> bool:
    keys = keys if isinstance(keys, list) else [keys]
    return any(k[1] == name for k in keys)


class _Fake:
    """Stands in for a Decoder in the pure planning test (no model needed)."""

    def __init__(self, decoding: bool):
        self.decoding = decoding


def _job(name: str, decoding: bool, request: dict) -> Job:
    job = Job((1, name), request, lambda frame: None)
    job.decoder = _Fake(decoding)
    return job


def test_plan_round_puts_chat_first_and_one_completion_step_per_round():
    chat = _job("chat", True, CHAT)
    chat2 = _job("chat2", True, CHAT)
    new_fim = [_job(f"f{i}", False, fim()) for i in range(3)]
    decoding_fim = _job("fd", True, fim())
    first, together, last = plan_round([*new_fim, chat, chat2, decoding_fim], True, 0)
    assert first == [] and together == [chat, chat2, decoding_fim] and last == [new_fim[0]]
    assert plan_round([*new_fim, chat], True, 1)[2] == [new_fim[1]]  # completions take turns
    # Without batching the chat steps alone, then one completion.
    first, together, last = plan_round([decoding_fim, chat], False, 0)
    assert first == [chat] and together == [] and last == [decoding_fim]
    # No chat: every completion steps.
    assert plan_round(new_fim, True, 0)[2] == new_fim
    # A cancelled completion finishes at once (no forward pass), before the chat.
    new_fim[2].cancel.set()
    first, _, last = plan_round([chat, *new_fim], False, 0)
    assert first == [chat, new_fim[2]] and last == [new_fim[0]]
