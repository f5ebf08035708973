"""Chat first on llama.cpp, as an order of events: the ``LlamaCppScheduler``'s pacing of a
code completion's prompt beside a streaming chat (``model.serving.scheduler.pacing``).

The engine here is a FAKE (``ScriptedEngine`` says so in its name): it stands in for
llama.cpp only to make the timing scripted. It answers on the calling thread as the real one
does, moves an injected ``FakeClock`` by a fixed amount per prompt token and per answer
token, and records each call with the fake times it started and ended. Nothing here reads
the wall clock, so these tests say the same on a quiet and on a loaded machine. The real
engine's side (llama.cpp finds the steps in its slot, a cancelled request's prompt work is
kept, chats keep off the completion slot) is tested in test_worker_completion.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from model.prompt.params import MAX_NEW_TOKENS
from model.runtime.spec import ModelSpec
from model.serving.scheduler import Clock, Job, LlamaCppScheduler, Pacing, reusable_start
from model.serving.scheduler.pacing import common_prefix
from tests.model.test_worker_completion import CODE, Collector, fim

CHAT = {"messages": [{"role": "user", "content": "Write a long module."}], "params": {"max_new_tokens": MAX_NEW_TOKENS}}


class FakeClock(Clock):
    """Fake time, moved only by the scripted engine (``advance``)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self.t

    def advance(self, dt: float) -> None:
        with self._lock:
            self.t += dt

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        # Fake time moves with the chat's tokens, each of which notifies the condition; the
        # short real timeout only keeps a missed notification from stalling the scheduler,
        # which checks its condition and the fake time again either way.
        cond.wait(0.02)


@dataclass
class Call:
    kind: str  # "prefill", "chat" or "fim"
    new_tokens: int  # prompt tokens not in the slot's cache
    start: float
    end: float = 0.0


class ScriptedEngine:
    """FAKE llama.cpp engine for pacing tests: the real tokenizer and chat format (prompts
    are built as in the worker), scripted answers and scripted (fake-clock) timing.

    A chat streams until ``release_chat`` is set (or it is cancelled); a completion writes
    ``max_new_tokens`` tokens. ``on_prefill`` (when set) is called inside each prompt step."""

    name = model_name = "scripted fake engine"

    def __init__(self, tokenizer, chat_format, clock: FakeClock, prefill_token_s: float = 0.001,
                 chat_token_s: float = 0.01, fim_token_s: float = 0.01):
        self.tokenizer, self.chat_format, self.clock = tokenizer, chat_format, clock
        self.context_window = 1 << 20  # the chat's endless answer fits
        self.slots = 4
        self.prefill_token_s, self.chat_token_s, self.fim_token_s = prefill_token_s, chat_token_s, fim_token_s
        self.release_chat = threading.Event()
        self.on_prefill = None
        self.calls: list[Call] = []
        self._cached: dict[int | None, list[int]] = {}

    def _feed(self, kind: str, ids, slot) -> tuple[Call, int]:
        cached = common_prefix(self._cached.get(slot, []), list(ids))
        call = Call(kind, len(ids) - cached, self.clock.now())
        self.calls.append(call)
        self.clock.advance((len(ids) - cached) * self.prefill_token_s)
        self._cached[slot] = list(ids)
        return call, cached

    def prefill(self, ids, cancel, slot=None, params=None) -> dict:
        call, cached = self._feed("prefill", ids, slot)
        if self.on_prefill is not None:
            self.on_prefill()
        call.end = self.clock.now()
        return {"prompt_tokens": len(ids), "cached_prompt_tokens": cached}

    def run(self, ids, params, cancel, on_delta, stop_ids=(), slot=None, heal="", dry=True):
        from model.runtime.llamacpp_engine import Outcome

        if cancel.is_set():  # (as llama.cpp's engine: a cancelled request is not sent)
            return Outcome(usage={"prompt_tokens": len(ids), "tokens": 0, "total_s": 0.0}, finish_reason="cancelled")
        chat = not (stop_ids or heal or params.max_new_tokens == 1)
        call, cached = self._feed("chat" if chat else "fim", ids, slot)
        tokens = 0
        while not cancel.is_set() and tokens < params.max_new_tokens:
            if chat and self.release_chat.is_set():
                break
            self.clock.advance(self.chat_token_s if chat else self.fim_token_s)
            tokens += 1
            on_delta(f" w{tokens}")
            if chat:
                time.sleep(0.002)  # (real time: lets the other threads run; no result depends on it)
        call.end = self.clock.now()
        usage = {"prompt_tokens": len(ids), "cached_prompt_tokens": cached, "tokens": tokens,
                 "total_s": round(call.end - call.start, 6)}
        return Outcome(usage=usage, finish_reason="cancelled" if cancel.is_set() else "stop")


@pytest.fixture(scope="module")
def lite_tokenizer():
    """The embedded model's own light tokenizer (no torch, no llama.cpp)."""
    from model.prompt.tokenizer import load_lite_tokenizer
    from model.runtime.gguf_tokenizer import tokenizer_folder
    from model.runtime.spec import default_gguf_path

    return load_lite_tokenizer(tokenizer_folder(default_gguf_path()))


@pytest.fixture()
def scripted(lite_tokenizer):
    """(scheduler, engine) on the FAKE engine and clock; every chat is released afterwards."""
    from model.prompt.chat_format import chat_format_for

    clock = FakeClock()
    engine = ScriptedEngine(lite_tokenizer, chat_format_for(lite_tokenizer), clock)
    made = []

    def make(pacing: Pacing = Pacing()) -> LlamaCppScheduler:
        sched = LlamaCppScheduler(ModelSpec("gguf", "scripted", "scripted"), pacing=pacing, clock=clock, load=lambda spec: engine)
        sched.trace = []
        sched.start()
        assert sched.ready.wait(60) and sched.load_error is None
        made.append(sched)
        return sched

    yield make, engine
    engine.release_chat.set()
    for sched in made:  # (daemon threads; they idle once their jobs end)
        for _ in range(500):
            if not sched.busy:
                break
            time.sleep(0.01)


def _long_prefix(repeat: int = 12) -> str:
    return "# a file\n" + CODE * repeat


def _chat_then(sched, engine, c: Collector, *jobs: tuple[str, dict]) -> list:
    """Start a chat, wait for its first token, run ``jobs`` one after the other beside it,
    then end the chat; the frames of all."""
    sched.submit(Job((1, "chat"), CHAT, c.emit_for("chat")))
    first = c.frames.get(timeout=60)
    assert first[0] == "chat" and first[1]["type"] == "delta"
    frames = [first]
    for name, request in jobs:
        sched.submit(Job((1, name), request, c.emit_for(name)))
        frames += c.wait({name}, timeout=60)
    engine.release_chat.set()
    return frames + c.wait({"chat"}, timeout=60)


def _done(frames: list, name: str) -> dict:
    return next(f for n, f in frames if n == name and f["type"] in ("done", "error"))


@pytest.mark.parametrize("pacing", [Pacing(), Pacing(chat_rest_factor=0.0)], ids=["default", "no-rest"])
def test_beside_a_chat_a_completion_prompt_goes_in_small_steps_with_rests(scripted, pacing):
    make, engine = scripted
    s = make(pacing)
    c = Collector()
    frames = _chat_then(s, engine, c, ("c", fim(_long_prefix())))
    assert [n for n, f in frames if f["type"] in ("done", "error")] == ["c", "chat"]
    assert _done(frames, "c")["type"] == "done"

    trace = list(s.trace)
    steps = [i for i, e in enumerate(trace) if e[0] == "prefill" and e[1] == (1, "c")]
    assert len(steps) >= 5, trace
    assert all(trace[i][2] <= pacing.prefill_chunk for i in steps)
    # The chat decoded on its own between two steps: at least two of its tokens.
    for a, b in zip(steps, steps[1:], strict=False):
        assert sum(e == ("delta", (1, "chat")) for e in trace[a:b]) >= pacing.chat_tokens_between_chunks, trace[a:b]
    # ... and for chat_rest_factor times as long as the step took (fake time).
    prefills = [call for call in engine.calls if call.kind == "prefill"]
    assert len(prefills) == len(steps)
    for one, nxt in zip(prefills, prefills[1:], strict=False):
        assert nxt.start - one.end >= pacing.chat_rest_factor * (one.end - one.start) - 1e-9, (one, nxt)
    # The request for the answer has the last small part of the prompt to process.
    run = next(e for e in trace if e[0] == "run" and e[1] == (1, "c"))
    answer = next(call for call in engine.calls if call.kind == "fim")
    assert run[2] <= pacing.prefill_chunk and answer.new_tokens == run[2]
    assert answer.start - prefills[-1].end >= pacing.chat_rest_factor * (prefills[-1].end - prefills[-1].start) - 1e-9


def test_without_a_chat_the_steps_follow_each_other_at_once(scripted):
    make, engine = scripted
    pacing = Pacing(prefill_step_alone=48)
    s = make(pacing)
    c = Collector()
    s.submit(Job((2, "c"), fim(_long_prefix()), c.emit_for("c")))
    frames = c.wait({"c"}, timeout=60)
    assert _done(frames, "c")["type"] == "done"
    steps = [e for e in s.trace if e[0] == "prefill"]
    assert len(steps) >= 4 and all(e[2] == 48 for e in steps), s.trace
    calls = engine.calls
    assert [call.kind for call in calls] == ["prefill"] * len(steps) + ["fim"]
    assert all(nxt.start == one.end for one, nxt in zip(calls, calls[1:], strict=False)), calls  # no rests
    assert calls[-1].new_tokens <= 48


def test_a_cancel_stops_a_completion_between_its_prompt_steps(scripted):
    """The user types on during a prompt step: the completion ends at once, cancelled, while
    the chat streams; its next step and its answer's request are never sent."""
    make, engine = scripted
    s = make(Pacing(chat_rest_factor=50.0))  # a long rest: the cancel must cut it
    engine.on_prefill = lambda: s.cancel((1, "c"))
    c = Collector()
    frames = _chat_then(s, engine, c, ("c", fim(_long_prefix())))
    assert [n for n, f in frames if f["type"] in ("done", "error")] == ["c", "chat"]
    done = _done(frames, "c")
    assert done["type"] == "done" and done["finish_reason"] == "cancelled"
    assert not [f for n, f in frames if n == "c" and f["type"] == "delta"]
    assert sum(e[0] == "prefill" for e in s.trace) == 1
    assert [call.kind for call in engine.calls if call.kind != "chat"] == ["prefill"]


@pytest.mark.parametrize("fim_token_s", [0.01, 1.0])
def test_a_completion_decoded_beside_a_chat_gives_the_chat_a_rest(scripted, fim_token_s):
    """Its tokens ride in the chat's batches, so the chat rests from the whole request: the
    next completion starts ``chat_rest_factor`` times as long as the last one took after it,
    at most ``chat_rest_max_s`` (a slow one must not keep completions away for long)."""
    make, engine = scripted
    engine.fim_token_s = fim_token_s
    pacing = Pacing()
    s = make(pacing)
    c = Collector()
    short = {"fim": {"prefix": CODE, "path": "a.py"}, "params": {"max_new_tokens": 4}}
    frames = _chat_then(s, engine, c, ("c1", short), ("c2", {**short, "fim": {**short["fim"], "prefix": CODE + "["}}))
    assert [n for n, f in frames if f["type"] in ("done", "error")] == ["c1", "c2", "chat"]
    usage = _done(frames, "c1")["usage"]
    assert usage["tokens"] == 4
    first, second = [call for call in engine.calls if call.kind == "fim"]
    rest = min(pacing.chat_rest_factor * usage["total_s"], pacing.chat_rest_max_s)
    assert second.start - first.end >= rest - 1e-9, (first, second, rest)
    if fim_token_s == 1.0:  # capped (the rest waits for the chat's tokens, 0.01 s of fake time each)
        assert rest == pacing.chat_rest_max_s < pacing.chat_rest_factor * usage["total_s"] / 2
        assert second.start - first.end < pacing.chat_rest_factor * usage["total_s"] / 2


def test_reusable_start_sees_a_window_that_slid():
    old = list(range(1000))
    assert reusable_start(old, old[:990] + [5000, 5001], reuse=64) == 990  # typing: the common start
    slid = old[64:] + [7000, 7001]  # the window's start moved by a step: llama.cpp shifts the rest
    assert reusable_start(old, slid, reuse=64) == 936
    assert reusable_start(old, [9] + old[64:], reuse=64) == 0  # no chunk of 64 right after the start
    assert reusable_start([], slid, reuse=64) == 0


def test_a_request_whose_prompt_cannot_be_built_ends_alone(scripted, monkeypatch):
    """Any exception while a job starts (here a FAKE fault: a chat template that raises, as
    jinja's ``raise_exception`` does) ends that job with one error frame; the scheduler
    thread goes on and serves the next request."""
    from model.serving.scheduler import base

    make, engine = scripted
    s = make()
    real = base.build_prompt

    def faulty(eng, request):
        if request.get("broken"):
            raise RuntimeError("Conversation roles must alternate user/assistant/user/assistant/...")
        return real(eng, request)

    monkeypatch.setattr(base, "build_prompt", faulty)
    c = Collector()
    s.submit(Job((3, "bad"), {**fim(), "broken": True}, c.emit_for("bad")))
    s.submit(Job((3, "good"), fim(), c.emit_for("good")))
    frames = c.wait({"bad", "good"}, timeout=60)
    bad = _done(frames, "bad")
    assert bad["type"] == "error" and "roles must alternate" in bad["message"] and "\n" not in bad["message"]
    assert _done(frames, "good")["type"] == "done" and s.is_alive()
