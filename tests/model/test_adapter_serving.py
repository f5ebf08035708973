"""``BASE+ADAPTER`` specs: llama.cpp serves the base GGUF with the LoRA adapter on top, and
each request picks how much of it to use (``adapter_scale``: 0 is the base alone)."""

from __future__ import annotations

import threading

import pytest

from model.prompt.params import GenerationParams
from model.runtime.spec import ADAPTER_FILE, ModelSpec
from model.serving.client import WorkerClient

from .conftest import kill_workers
from .test_spec import write_adapter

PROMPT = list(range(300, 340))


@pytest.fixture(scope="module")
def base(tiny_models):
    return tiny_models.gguf("llama", "Q8_0")


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("adapter-run")
    write_adapter(run / ADAPTER_FILE, tensor="attn_q")
    return run


def greedy_ids(engine, scale: float) -> list[int]:
    texts: list[str] = []
    params = GenerationParams(max_new_tokens=16, adapter_scale=scale)
    engine.run(PROMPT, params, threading.Event(), texts.append)
    return engine.tokenizer(("".join(texts)), add_special_tokens=False)["input_ids"]


def test_scale_zero_is_the_base_and_one_is_the_adapter(base, adapter_dir):
    from model.runtime import llamacpp_engine

    plain = llamacpp_engine.load(base, "base", slots=1, threads=1)
    with_adapter = llamacpp_engine.load(base, "adapted", slots=1, threads=1, adapter=adapter_dir / ADAPTER_FILE)
    try:
        expected = greedy_ids(plain, 1.0)
        assert greedy_ids(with_adapter, 0.0) == expected
        adapted = greedy_ids(with_adapter, 1.0)
        assert adapted != expected
        # per request, in any order: the slot's cache from one scale is not reused for another
        assert greedy_ids(with_adapter, 0.0) == expected
        assert greedy_ids(with_adapter, 1.0) == adapted
    finally:
        plain.server = with_adapter.server = None


def test_the_worker_serves_an_adapter_spec(base, adapter_dir, tmp_path):
    spec = ModelSpec.parse(f"{base}+{adapter_dir}")
    request = {"messages": [{"role": "user", "content": "hello"}], "params": {"max_new_tokens": 12}}

    def answer(client: WorkerClient, scale: float | None) -> str:
        params = dict(request["params"], **({"adapter_scale": scale} if scale is not None else {}))
        return "".join(e["text"] for e in client.generate({**request, "params": params}) if e["type"] == "delta")

    sockets = {name: tmp_path / f"{name}.sock" for name in ("adapted", "plain")}
    with WorkerClient(spec, socket_path=sockets["adapted"]) as adapted, \
            WorkerClient(spec.base, socket_path=sockets["plain"]) as plain:
        base_text = answer(plain, None)  # (answers once the model is loaded)
        assert answer(adapted, 0.0) == base_text
        info = adapted.info()
        assert info["engine"] == "llama.cpp" and info["adapter"] == str(adapter_dir / ADAPTER_FILE)
        assert plain.info().get("adapter") is None
        assert answer(adapted, None) != base_text  # the default scale is the adapter as trained
        with pytest.raises(Exception, match="adapter_scale must be a number from 0"):
            for event in adapted.generate({**request, "params": {"adapter_scale": 9}}):
                if event["type"] == "error":
                    raise RuntimeError(event["message"])
    kill_workers(tmp_path)


def test_completions_apply_the_scale_the_adapter_carries(base, tmp_path):
    """``starchat adapt`` writes a completion scale into the adapter: a completion request that
    sets no ``adapter_scale`` applies it (here 0: the base alone), chat requests the adapter
    as trained, and one that sets a scale gets that."""
    run = tmp_path / "run"
    run.mkdir()
    write_adapter(run / ADAPTER_FILE, tensor="attn_q", completion_scale=0.0)
    spec = ModelSpec.parse(f"{base}+{run}")
    fim = {"fim": {"prefix": "def add(a, b):\n    return", "suffix": "", "path": "m.py"},
           "params": {"max_new_tokens": 12}}
    chat = {"messages": [{"role": "user", "content": "hello"}], "params": {"max_new_tokens": 12}}

    def answer(client: WorkerClient, request: dict, **params) -> str:
        request = {**request, "params": {**request["params"], **params}}
        return "".join(e["text"] for e in client.generate(request) if e["type"] == "delta")

    with WorkerClient(spec, socket_path=tmp_path / "adapted.sock") as adapted, \
            WorkerClient(spec.base, socket_path=tmp_path / "plain.sock") as plain:
        base_fim, base_chat = answer(plain, fim), answer(plain, chat)
        assert answer(adapted, fim) == base_fim  # the carried scale, 0
        assert adapted.info()["adapter_completion_scale"] == 0.0
        assert plain.info()["adapter_completion_scale"] is None
        assert answer(adapted, fim, adapter_scale=1.0) != base_fim  # a scale that is set wins
        assert answer(adapted, chat) != base_chat  # chat: the adapter as trained
    kill_workers(tmp_path)
