"""Code completions in the worker: the ``fim`` request, and chat first in the scheduler.

The schedulers run in this process on the real embedded model; their ``trace`` records every
step (one forward pass each on torch), so the interleaving is asserted as an order, not a
time. The llama.cpp scheduler's pacing beside a chat is tested on a scripted engine and
clock in test_pacing.py.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid

import pytest

from model.prompt.params import GenerationParams
from model.runtime.spec import ModelSpec
from model.serving.scheduler import (
    Job,
    LlamaCppScheduler,
    Pacing,
    TorchScheduler,
    build_prompt,
    plan_round,
)

CHAT = {"messages": [{"role": "user", "content": "Write a Python function is_even(n)."}],
        "params": {"max_new_tokens": 40}}
CODE = "import os\n\n\ndef read_lines(path):\n    with open(path) as f:\n        return "


def fim(prefix: str = CODE, **extra) -> dict:
    return {"fim": {"prefix": prefix, "suffix": "\n", "path": "a.py", **extra},
            "params": {"max_new_tokens": 8}}


@pytest.fixture()
def scheduler(loaded):
    sched = TorchScheduler(ModelSpec.default(), load=lambda spec: loaded)
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
    ids, truncated, params, heal = build_prompt(scheduler.engine, fim())
    assert params.max_new_tokens == 8 and truncated == []
    # SmolLM2 has no FIM tokens: a prefix-only continuation of the text before the cursor,
    # its last token healed (left to the answer, which must start with its text).
    assert heal == " " and tok.decode(ids) + heal == CODE
    ids, truncated, _, heal = build_prompt(scheduler.engine, fim(CODE * 10, context_tokens=64))
    assert 64 - 64 // 16 - 1 < len(ids) < 64 and truncated == ["prefix"]  # cut from the left, in steps
    assert (tok.decode(ids) + heal).endswith(CODE)
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
    from model.runtime.engine import Stream

    ids, _, params, heal = build_prompt(scheduler.engine, fim())
    expected = "".join(Stream(scheduler.engine.decoder(ids, params, heal=heal)))
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


# --- llama.cpp (the engine of GGUF specs, the default's included) ------------------------

LONG_CHAT = {"messages": [{"role": "user", "content": "Write a Python module with ten small string "
                           "helper functions, each with a docstring and an example."}],
             "params": {"max_new_tokens": 400}}


@pytest.fixture(scope="module")
def llama_scheduler():
    """The worker's scheduler in this process on llama.cpp (the default spec's engine)."""
    from model.runtime import llamacpp_engine

    if not llamacpp_engine.available():
        pytest.skip("llama.cpp (the xllamacpp wheel) is not available here")
    sched = LlamaCppScheduler(ModelSpec.default())
    sched.start()
    assert sched.ready.wait(300) and sched.load_error is None
    assert sched.info["engine"] == "llama.cpp"
    yield sched
    sched.engine.server = None  # llama.cpp stops when its server object goes


def _text(frames: list, name: str) -> str:
    return "".join(f["text"] for n, f in frames if n == name and f["type"] == "delta")


def _done(frames: list, name: str) -> dict:
    return next(f for n, f in frames if n == name and f["type"] in ("done", "error"))


def _unique_prefix(tag: str, repeat: int = 12) -> str:
    """A long prefix no slot has cached (its first line is new), ~25 tokens per repeat."""
    return f"# {tag} {uuid.uuid4().hex}\n" + CODE * repeat


def test_llamacpp_completion_without_a_chat_goes_in_steps_one_after_another(llama_scheduler):
    """Without a chat the prompt still goes in steps (a chat that starts meanwhile waits for
    one step, not the whole window), each right after the last: no rests, and llama.cpp
    finds every step in the slot."""
    step = Pacing().prefill_step_alone
    s = llama_scheduler
    s.trace = []
    c = Collector()
    s.submit(Job((3, "c"), fim(_unique_prefix("alone", 24)), c.emit_for("c")))
    frames = c.wait({"c"})
    done = _done(frames, "c")
    assert done["type"] == "done" and _text(frames, "c").strip()
    steps = [e for e in s.trace if e[0] == "prefill"]
    run = next(e for e in s.trace if e[0] == "run")
    assert len(steps) >= 5 and all(e[2] == step for e in steps), s.trace
    assert run[2] <= step
    assert done["usage"]["cached_prompt_tokens"] >= done["usage"]["prompt_tokens"] - run[2] - 1


def test_llamacpp_completion_stops_at_a_file_separator(llama_scheduler, monkeypatch):
    """``<file_sep>`` is no end-of-generation token for llama.cpp, which renders it as empty
    text and goes on; the worker ends a completion there (the text case is in
    test_llamacpp_engine.py)."""
    from model.prompt.params import GenerationParams

    s = llama_scheduler
    sep = s.engine.tokenizer.get_vocab()["<file_sep>"]
    body = s.engine.request_body

    def forced(*args, **kwargs):  # the model writes <file_sep> and nothing else
        return {**body(*args, **kwargs), "logit_bias": [[sep, 100.0]]}

    monkeypatch.setattr(s.engine, "request_body", forced)
    # (few tokens: the DRY sampler would end a long run of one token by itself)
    # (the prefix ends in a byte token, half an emoji: no token healing, which would make the
    # first token spell the prefix's last one)
    request = {"fim": {"prefix": CODE + "# \U0001F600", "path": "a.py"}, "params": {"max_new_tokens": 6}}
    assert build_prompt(s.engine, request)[3] == ""
    c = Collector()
    s.submit(Job((4, "c"), request, c.emit_for("c")))
    frames = c.wait({"c"})
    done = _done(frames, "c")
    assert done["type"] == "done" and done["finish_reason"] == "stop" and done["usage"]["tokens"] == 0
    assert _text(frames, "c") == ""
    # The same prompt without the completion's stop ids: llama.cpp writes on past it.
    ids = build_prompt(s.engine, request)[0]
    outcome = s.engine.run(ids, GenerationParams(max_new_tokens=6), threading.Event(), lambda _t: None)
    assert outcome.finish_reason == "length" and outcome.usage["tokens"] == 6, outcome


LINE_START = "import os\n\n\ndef read_lines(path):\n    with open(path) as f:\n"


@pytest.mark.parametrize("engine", ["llama.cpp", "torch"])
def test_token_healing_a_line_start_gets_the_indented_line(engine, request):
    """At a line start the prefix ends in a lone "\n" token, which the model saw only merged
    with the next line's indentation; healed, the answer is the indented line (its "\n"
    hidden), on both engines. And a healed "\n\n" does not end the answer at a "\n\n" stop."""
    s = request.getfixturevalue("llama_scheduler" if engine == "llama.cpp" else "scheduler")
    c = Collector()
    s.submit(Job((8, "a"), {"fim": {"prefix": LINE_START, "path": "a.py"},
                            "params": {"max_new_tokens": 8, "stop": ["\n\n"]}}, c.emit_for("a")))
    s.submit(Job((8, "b"), {"fim": {"prefix": "import os\n\n", "path": "a.py"},
                            "params": {"max_new_tokens": 8, "stop": ["\n\n"]}}, c.emit_for("b")))
    frames = c.wait({"a", "b"})
    assert build_prompt(s.engine, {"fim": {"prefix": LINE_START}})[3] == "\n"
    text = _text(frames, "a")
    assert text.startswith("        ") and text.strip(), repr(text)  # the with-block's body
    assert _done(frames, "b")["usage"]["tokens"] >= 2 and _text(frames, "b").strip()


def test_llamacpp_code_completions_go_without_the_dry_sampler(llama_scheduler, monkeypatch):
    """DRY penalises repeating what the context holds, which is what the next line of code
    usually does (docs/performance.md): chats have it (once they repeat themselves,
    model.runtime.repetition), completions not."""
    s = llama_scheduler
    asked: dict = {}
    run = s.engine.run

    def spy(*args, **kwargs):  # the real run, its repetition control recorded
        asked.setdefault("fim" if kwargs.get("heal") or kwargs.get("stop_ids") else "chat", kwargs.get("dry", True))
        return run(*args, **kwargs)

    monkeypatch.setattr(s.engine, "run", spy)
    c = Collector()
    s.submit(Job((9, "chat"), {"messages": [{"role": "user", "content": "Hi"}], "params": {"max_new_tokens": 2}},
                 c.emit_for("chat")))
    c.wait({"chat"})
    s.submit(Job((9, "c"), fim(), c.emit_for("c")))
    c.wait({"c"})
    assert asked == {"chat": True, "fim": False}
    assert s.engine.dry_after_repeat and s.engine.dry["dry_multiplier"] > 0 and s.engine.dry["after_repeat"]
    assert "dry_multiplier" not in s.engine.request_body([1, 2], GenerationParams(), dry=False)


def test_torch_completion_ends_at_its_stop_ids(scheduler):
    """The torch engine honours a completion's end tokens too (``Decoder.stop_ids``)."""
    engine = scheduler.engine
    ids = build_prompt(engine, fim())[0]
    first = engine.decoder(ids, {"max_new_tokens": 4})
    text = "".join(first.step() for _ in range(4) if not first.done)
    assert text and first.generated
    stopped = engine.decoder(ids, {"max_new_tokens": 4}, stop_ids=[first.generated[0]])
    assert stopped.step() == "" and stopped.done and stopped.finish_reason == "stop"


def test_llamacpp_typing_runs_one_completion_at_a_time_on_the_last_ones_work(llama_scheduler, monkeypatch):
    """A typist's requests, each cancelling the one before (as the language server does):
    completions never run side by side (each would prefill the whole window in a slot of its
    own), a request cancelled while it waits is dropped unsent, and the last one finds the
    prompt its cancelled predecessors processed in the slot's cache."""
    s = llama_scheduler
    running, most = [0], [0]
    real_run = s.engine.run

    def counted(*args, **kwargs):  # the real engine, with a count of calls in flight
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            return real_run(*args, **kwargs)
        finally:
            running[0] -= 1

    monkeypatch.setattr(s.engine, "run", counted)
    s.trace = []
    prefix = _unique_prefix("typing", 24)
    c = Collector()
    names = [f"k{i}" for i in range(4)]
    for i, name in enumerate(names):
        if i:
            s.cancel((6, names[i - 1]))
        s.submit(Job((6, name), fim(prefix + "x" * i), c.emit_for(name)))
        if i == 0:  # the first is inside llama.cpp's prompt work when the next keystroke comes
            while not any(e == ("run", (6, name), e[2]) for e in s.trace if len(e) == 3):
                time.sleep(0.01)
            time.sleep(0.3)
        time.sleep(0.05)
    frames = c.wait(set(names))
    assert most[0] == 1, "two completions ran in llama.cpp at once"
    dones = {name: _done(frames, name) for name in names}
    assert all(d["type"] == "done" for d in dones.values())
    assert all(dones[n]["finish_reason"] == "cancelled" for n in names[:-1]), (dones, s.trace)
    last = dones[names[-1]]
    assert last["finish_reason"] != "cancelled" and _text(frames, names[-1]).strip()
    runs = [e[1][1] for e in s.trace if e[0] == "run"]
    assert runs[0] == "k0" and runs[-1] == names[-1] and len(runs) < len(names) + 1
    assert any(e[0] == "dropped" for e in s.trace) or len(runs) == len(names)
    # The cancelled first request's prompt work was kept (at least its first batch, which
    # llama.cpp cannot interrupt; all of it on a fast machine) and the last one started from it.
    from model.runtime.llamacpp_engine import BATCH

    assert last["usage"]["cached_prompt_tokens"] >= BATCH, last["usage"]


def test_llamacpp_chats_keep_off_the_completion_slot_and_turns_find_their_slot(llama_scheduler, monkeypatch):
    """Completions keep to the last llama.cpp slot (their cache survives the chats); a chat
    takes another free slot, the one whose last prompt starts like its own."""
    s = llama_scheduler
    calls = []
    real_run = s.engine.run

    def recorded(ids, params, *args, **kwargs):  # the real engine, each call's kind and slot noted
        kind = "fim" if kwargs.get("stop_ids") or params.max_new_tokens == 1 else "chat"  # (1: a prompt step)
        calls.append((kind, kwargs.get("slot"), len(ids)))
        return real_run(ids, params, *args, **kwargs)

    monkeypatch.setattr(s.engine, "run", recorded)
    last = s.engine.slots - 1
    c = Collector()
    short = {"messages": [{"role": "user", "content": "Name one prime number."}], "params": {"max_new_tokens": 12}}
    s.submit(Job((7, "a"), LONG_CHAT, c.emit_for("a")))
    s.submit(Job((7, "b"), short, c.emit_for("b")))
    s.submit(Job((7, "c"), fim(_unique_prefix("slots")), c.emit_for("c")))
    frames = c.wait({"a", "b", "c"})
    assert all(_done(frames, n)["type"] == "done" for n in "abc")
    chats = [(n, slot) for kind, slot, n in calls if kind == "chat"]
    assert len(chats) == 2 and None not in [slot for _n, slot in chats], calls  # the worker chose
    assert last not in [slot for _n, slot in chats] and chats[0][1] != chats[1][1], calls
    assert {slot for kind, slot, _n in calls if kind == "fim"} == {last}, calls
    # The short chat's next turn goes back to the slot holding its first turn.
    b_slot = min(chats)[1]  # the shorter prompt is the short chat's
    again = {"messages": [*short["messages"], {"role": "assistant", "content": "7"},
                          {"role": "user", "content": "And another?"}], "params": {"max_new_tokens": 8}}
    c2 = Collector()
    s.submit(Job((7, "b2"), again, c2.emit_for("b2")))
    c2.wait({"b2"})
    assert calls[-1][:2] == ("chat", b_slot), calls
