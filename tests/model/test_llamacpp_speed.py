"""llama.cpp's speed settings keep the answers: speculation and the busy machine's thread count.

On the embedded model in this process:
- draft-free speculation (``model.runtime.speculation``) drafts and keeps tokens where the
  answer copies its prompt, and the greedy text is the same with it and without it;
- the engine on one thread (the busy machine's server, ``model.runtime.llamacpp_threads``)
  goes to the busy machine's server while the machine is busy, and an answer that moves from
  one server to the other while it streams is the answer that never moved. Whether the
  machine is busy is scripted here (``ScriptedWatch``, a stand-in for ``CpuWatch`` that says
  so): a test cannot load the cores on demand, and ``CpuWatch`` itself is tested on scripted
  /proc readings (``test_cpu_watch.py``).

Every server here runs on one thread: on a machine that other processes keep busy (a test
run beside others) two llama.cpp threads spin at each barrier and a 64-token answer takes
minutes, which is the very thing the busy machine's server avoids.
"""

from __future__ import annotations

import threading

import pytest

from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT
from model.prompt.fim import stop_token_ids
from model.prompt.params import GenerationParams
from model.runtime.spec import default_gguf_path
from model.runtime.speculation import DEFAULT, Speculation, default

# A file of near-identical functions: the next one copies the ones above (the 135M model does).
HANDLERS = "".join(
    f"def handle_{name}(settings, value):\n"
    f"    \"\"\"Set the {name} field of ``settings`` to ``value`` and log the change.\"\"\"\n"
    f"    old = settings.get(\"{name}\")\n"
    f"    settings[\"{name}\"] = value\n"
    f"    log.info(\"{name}: %r -> %r\", old, value)\n"
    f"    return old\n\n\n"
    for name in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"))


def load(**kwargs):
    from model.runtime import llamacpp_engine

    return llamacpp_engine.load(default_gguf_path(), "SmolLM2-135M-Instruct", slots=1, **kwargs)


def answer(engine, ids: list[int], max_new_tokens: int, **run) -> tuple[str, dict]:
    parts: list[str] = []
    outcome = engine.run(ids, GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0),
                         threading.Event(), parts.append, **run)
    return "".join(parts), outcome.usage


@pytest.fixture(scope="module")
def plain():
    eng = load(speculation=None, threads=1)
    yield eng
    eng.server = None


@pytest.fixture(scope="module")
def speculating():
    eng = load(speculation=Speculation("ngram-simple", lookup=4, draft=8), threads=1)
    yield eng
    eng.server = None


def copy_prompt(engine) -> list[int]:
    return engine.chat_format.encode([
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "Repeat this code exactly, in a ```python block:\n```python\n" + HANDLERS + "```"}])


def test_speculation_drafts_copies_and_keeps_the_greedy_text(plain, speculating):
    ids = copy_prompt(plain)
    text, usage = answer(plain, ids, 160, dry=False)
    fast, fast_usage = answer(speculating, ids, 160, dry=False)
    assert fast == text and fast_usage["tokens"] == usage["tokens"] == 160
    assert "def handle_" in text  # the answer copies the prompt ...
    assert fast_usage["draft_tokens"] > 0 and fast_usage["draft_accepted"] > 0  # ... and drafts were kept
    assert usage["draft_tokens"] == usage["draft_accepted"] == 0  # none without speculation


def test_speculation_keeps_every_request_kind(plain, speculating):
    """Chat with repetition control (DRY once the answer repeats), a code completion with its
    healing grammar and stop tokens: the same text either way."""
    chat = plain.chat_format.encode([{"role": "user", "content": "Count from 1 to 30, one number per line."}])
    slow, fast = answer(plain, chat, 120)[0], answer(speculating, chat, 120)[0]
    assert fast == slow and "10" in slow
    fim = plain.tokenizer(HANDLERS + "def handle_io")["input_ids"]
    stops = stop_token_ids(plain.tokenizer)
    slow, _ = answer(plain, fim[:-1], 48, stop_ids=stops, heal="_io", dry=False)
    fast, _ = answer(speculating, fim[:-1], 48, stop_ids=stops, heal="_io", dry=False)
    assert fast == slow and slow.strip()


def test_speculation_settings_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="Unknown speculation kind"):
        Speculation("ngram-everything")
    with pytest.raises(ValueError, match="lookup of 1 to 1,024"):
        Speculation(lookup=0)
    monkeypatch.setenv("STARCHAT_SPECULATION", "")
    assert default() is None  # off unless asked for: the text can differ (the module's docstring)
    monkeypatch.setenv("STARCHAT_SPECULATION", "on")
    assert default() is DEFAULT
    monkeypatch.setenv("STARCHAT_SPECULATION", "ngram-mod:8:32")
    assert default() == Speculation("ngram-mod", 8, 32)
    monkeypatch.setenv("STARCHAT_SPECULATION", "fast please")
    with pytest.raises(ValueError, match="use off, on or KIND:LOOKUP:DRAFT"):
        default()


class ScriptedWatch:
    """A stand-in for ``CpuWatch``: the test says when the machine is busy."""

    def __init__(self) -> None:
        self.is_busy = False

    def busy(self) -> bool:
        return self.is_busy

    def stop(self) -> None:
        pass


@pytest.fixture()
def adaptive():
    """The engine as ``load`` makes it on two cores, its watch scripted, the busy server up
    (both servers on one thread: see the module's docstring; the quiet one says 2)."""
    from model.runtime.llamacpp_threads import ServerSet

    eng = load(speculation=None, threads=1)
    start = eng.servers.start  # the same file again (load's own starter)
    watch = ScriptedWatch()
    eng.servers = ServerSet(eng.server, 2, start=lambda _n: start(1), busy_threads=1, watch=watch)
    eng.servers.busy_server = start(1)
    yield eng, watch
    eng.server = None


def test_busy_machine_answers_on_one_thread_with_the_same_text(adaptive):
    eng, watch = adaptive
    ids = eng.chat_format.encode([{"role": "user", "content": "Write a Python function that reverses a string."}])
    quiet, quiet_usage = answer(eng, ids, 64)
    watch.is_busy = True
    busy, busy_usage = answer(eng, ids, 64)
    assert quiet_usage["threads"] == 2 and busy_usage["threads"] == 1
    assert busy == quiet
    assert busy_usage["cached_prompt_tokens"] == 0  # the busy server's own cache: the prompt read again


def test_an_answer_moves_to_one_thread_when_the_machine_turns_busy(adaptive):
    eng, watch = adaptive
    ids = eng.chat_format.encode([{"role": "user", "content": "Write a Python class for a bank account with "
                                                              "deposit, withdraw and a balance check."}])
    unmoved, _ = answer(eng, ids, 120)
    parts: list[str] = []

    def on_delta(text: str) -> None:
        parts.append(text)
        if len(parts) == 30:
            watch.is_busy = True  # a build starts in another terminal

    watch.is_busy = False
    outcome = eng.run(ids, GenerationParams(max_new_tokens=120, temperature=0.0), threading.Event(), on_delta)
    assert outcome.usage["threads"] == 1  # it went on on the busy server ...
    assert outcome.usage["tokens"] == 120 and outcome.finish_reason == "length"
    assert "".join(parts) == unmoved  # ... from exactly the tokens it had
