"""Fault containment in the worker: a failure at any stage of one request ends that request
with one error frame carrying a sentence, and the same scheduler serves the next request.

Both schedulers run the real embedded model (llama.cpp in-process, and the torch engine).
The failures are injected on purpose (fakes that say so): a chat template that raises (a
real jinja template with ``raise_exception``), a tokenizer that breaks, an engine that
fails to start a request, one that fails mid-stream after a first delta, and (torch) a
scheduling round that raises.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from model.prompt.chat_format import chat_format_for
from model.runtime.spec import ModelSpec
from model.serving.scheduler import Job, LlamaCppScheduler, TorchScheduler

REQUEST = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],
           "params": {"max_new_tokens": 4, "temperature": 0.0}}
LONG = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."},
                     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again."}],
        "params": {"max_new_tokens": 4, "temperature": 0.0}}
RAISING_TEMPLATE = ("{% if messages | length > 2 %}{{ raise_exception('Only two turns, please') }}{% endif %}"
                    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:")
_ids = iter(range(10**6))


@pytest.fixture(scope="module", params=["llama.cpp", "torch"])
def scheduler(request):
    if request.param == "llama.cpp":
        sched: Any = LlamaCppScheduler(ModelSpec.default())
    else:
        loaded = request.getfixturevalue("loaded")
        sched = TorchScheduler(ModelSpec.default(), load=lambda _spec: loaded)
    sched.start()
    assert sched.ready.wait(300) and sched.load_error is None
    return sched


def ask(sched, request: dict = REQUEST, timeout: float = 300) -> list[dict]:
    """Submit one request and return its frames, up to its done or error frame."""
    frames: list[dict] = []
    finished = threading.Event()

    def emit(frame: dict) -> None:
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            finished.set()

    sched.submit(Job((0, f"r{next(_ids)}"), request, emit))
    assert finished.wait(timeout), frames
    return frames


def failed_with(frames: list[dict], words: str) -> str:
    kinds = [f["type"] for f in frames]
    assert kinds[-1] == "error" and kinds.count("error") == 1 and "done" not in kinds, frames
    message = frames[-1]["message"]
    assert words in message and "\n" not in message and "Traceback" not in message, message
    return message


def serves_the_next(sched) -> None:
    frames = ask(sched)
    assert frames[-1]["type"] == "done", frames
    assert any(f["type"] == "delta" for f in frames)
    assert sched.is_alive()


def test_a_template_that_raises_ends_its_request_only(scheduler, monkeypatch):
    tokenizer = copy.copy(scheduler.engine.tokenizer)
    tokenizer.chat_template = RAISING_TEMPLATE
    monkeypatch.setattr(scheduler.engine, "chat_format", chat_format_for(tokenizer, model_name="tiny-two-turns"))
    assert ask(scheduler)[-1]["type"] == "done"  # two turns: the template takes them
    failed_with(ask(scheduler, LONG), "The chat template of tiny-two-turns refused the conversation: "
                                      "Only two turns, please.")
    monkeypatch.undo()
    serves_the_next(scheduler)


def test_a_tokenizer_that_breaks_ends_its_request_only(scheduler, monkeypatch):
    def broken(*args, **kwargs):  # a fault injected on purpose
        raise RuntimeError("the tokenizer broke")

    monkeypatch.setattr(type(scheduler.engine.tokenizer), "__call__", broken)
    failed_with(ask(scheduler), "the tokenizer broke")
    monkeypatch.undo()
    serves_the_next(scheduler)


def test_an_engine_that_cannot_start_a_request_ends_it_only(scheduler, monkeypatch):
    def refuse(*args, **kwargs):  # a fault injected on purpose
        raise RuntimeError("no slot for you")

    monkeypatch.setattr(scheduler.engine, "run" if hasattr(scheduler.engine, "run") else "decoder", refuse)
    failed_with(ask(scheduler), "no slot for you")
    monkeypatch.undo()
    serves_the_next(scheduler)


def test_a_failure_mid_stream_ends_that_request_only(scheduler, monkeypatch):
    engine = scheduler.engine
    if hasattr(engine, "run"):
        def run(prompt_ids, params, cancel, on_delta, **kwargs):  # a fault injected on purpose
            on_delta("partial")
            raise RuntimeError("the engine fell over mid-stream")

        monkeypatch.setattr(engine, "run", run)
    else:
        real = engine.decoder

        def decoder(*args, **kwargs):
            dec = real(*args, **kwargs)
            steps = {"n": 0}
            step = dec.step

            def failing_step():  # a fault injected on purpose: the second step fails
                steps["n"] += 1
                if steps["n"] == 2:
                    raise RuntimeError("the engine fell over mid-stream")
                return step()

            dec.step = failing_step
            return dec

        monkeypatch.setattr(engine, "decoder", decoder)
    frames = ask(scheduler)
    failed_with(frames, "the engine fell over mid-stream")
    monkeypatch.undo()
    serves_the_next(scheduler)


def test_a_scheduling_round_that_raises_does_not_stop_the_scheduler(loaded, monkeypatch):
    """The torch scheduler steps every request in rounds (llama.cpp runs each on a thread of its
    own, so it has no round to fail)."""
    scheduler = TorchScheduler(ModelSpec.default(), load=lambda _spec: loaded)
    scheduler.start()
    assert scheduler.ready.wait(300)
    real = TorchScheduler._round
    calls = {"n": 0}

    def round_once_broken(self):  # a fault injected on purpose: one round raises
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the round broke")
        return real(self)

    monkeypatch.setattr(TorchScheduler, "_round", round_once_broken)
    failed_with(ask(scheduler), "the round broke")
    monkeypatch.undo()
    serves_the_next(scheduler)
