"""Evaluation runs a GGUF spec (the default among them) on llama.cpp in-process, as served.

So `starchat eval humaneval --model default` measures the engine users get; folders stay on
the torch engine. Real model, tiny budgets.
"""

import pytest

from model.prompt.params import GenerationParams
from model.runtime import llamacpp_engine
from training.evaluation.backends import EngineBackend, LlamaCppBackend, make_backend


@pytest.fixture(scope="module")
def backend():
    return make_backend("default")


def test_the_default_spec_is_evaluated_on_llama_cpp(backend):
    assert isinstance(backend, LlamaCppBackend)
    assert backend.chat_mode == "template"


def test_forcing_torch_evaluates_on_the_torch_engine(monkeypatch):
    monkeypatch.setenv("STARCHAT_ENGINE", "torch")
    assert isinstance(make_backend("default"), EngineBackend)


def test_a_reply_streams_with_usage_and_stops_when_told(backend):
    done = backend.complete([{"role": "user", "content": "Write a Python function that adds two numbers."}],
                            {"max_new_tokens": 12, "temperature": 0.0})
    assert done.text.strip()
    assert 0 < done.usage["tokens"] <= 12
    assert done.usage["prompt_tokens"] > 10
    # stop_when ends generation early: far fewer tokens than allowed, finish "stop".
    early = backend.complete([{"role": "user", "content": "Count from one to fifty in words."}],
                             {"max_new_tokens": 64, "temperature": 0.0}, stop_when=lambda text: len(text) >= 1)
    assert early.finish_reason == "stop"
    assert early.usage.get("tokens", 0) < 64


def test_raw_continuation_and_prefix(backend):
    raw = backend.complete_raw("def add(a, b):\n    return", {"max_new_tokens": 6, "temperature": 0.0})
    assert raw.text and raw.usage["prompt_tokens"] < 20  # no chat format around it
    plain = backend.complete([{"role": "user", "content": "Say hi."}], {"max_new_tokens": 4})
    primed = backend.complete([{"role": "user", "content": "Say hi."}], {"max_new_tokens": 4}, prefix="```python\n")
    assert primed.usage["prompt_tokens"] > plain.usage["prompt_tokens"]  # the prefix is in the prompt


def test_dry_off_and_on_reach_the_request(backend):
    on = backend.engine.request_body([1, 2, 3], GenerationParams())
    assert on.get("dry_multiplier", 0) > 0  # repetition control as served
    off = LlamaCppBackend(engine=backend.engine, dry={})
    assert "dry_multiplier" not in off.engine.request_body([1, 2, 3], GenerationParams())
    LlamaCppBackend(engine=backend.engine, dry=llamacpp_engine.DEFAULT_DRY)  # restore for other tests
    assert backend.engine.dry_after_repeat
