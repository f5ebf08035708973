"""Serving coverage: the model families users bring, as folders and as GGUF files.

Each cell of docs/architectures.md is one parameter of the ``served`` fixture: a tiny
random-weight ``llama``, ``gpt_bigcode`` (StarCoder), ``starcoder2`` or ``qwen2`` model
(tests/tiny_models.py, no hub) as a model folder and as Q8_0 and Q4_0 GGUF files, served
by a real worker process. Every cell goes through load (what the worker reports) -> chat
format -> streamed generation -> cancel mid-stream. Random weights write gibberish, so the
tests assert behaviour (formats, token counts, deltas, finish reasons, runners), never
the quality of the text.

Which runner serves a cell is written down in ``runner_for``. Every GGUF cell runs on
the torch path (the file de-quantized by transformers); a GGUF file of ``gpt_bigcode`` is
refused with a sentence there (transformers cannot read llama.cpp's ``starcoder`` GGUF
architecture), see ``test_starcoder_gguf_is_refused_with_a_sentence``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.client import WorkerClient, ensure_worker
from tests.tiny_models import ARCHS, QTYPES

from .conftest import kill_workers

MESSAGES = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
NEW_TOKENS = 12

# (arch, "folder" | qtype, tokenizer template) -> the chat format the worker must pick.
CELLS = {
    **{(arch, "folder", "chatml"): "template" for arch in ARCHS},
    **{(arch, q, "chatml"): "template" for arch in ARCHS if arch != "gpt_bigcode" for q in QTYPES},
    # No chat template: StarCoder with the StarChat tokens added (the StarChat recipe)
    # gets the StarChat template; base models without those tokens get dialogue prompting.
    ("gpt_bigcode", "folder", "starchat"): "starchat",
    ("starcoder2", "folder", "none"): "dialogue",
    ("qwen2", "Q4_0", "none"): "dialogue",
}
# What the prompt looks like in each format.
MARKERS = {"template": "<|im_start|>user\n", "starchat": "<|user|>\n", "dialogue": "Human: "}


def runner_for(arch: str, kind: str) -> str:
    """The runner that serves a cell: our own forward pass for plain Llama on the CPU
    (folders and de-quantized GGUF files alike), transformers for the other families."""
    return "lean" if arch == "llama" else "transformers"


@dataclass
class Served:
    arch: str
    kind: str
    template: str
    chat_kind: str
    spec: str
    socket: Path


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """GGUF files are de-quantized into the model cache: keep those copies out of the user's.

    ``STARCHAT_ENGINE=torch`` keeps these cells on the torch path they document once a
    llama.cpp engine serves GGUF files by default (where there is none, it changes nothing).
    """
    path = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STARCHAT_CACHE_DIR", str(path))
        mp.setenv("STARCHAT_ENGINE", "torch")
        yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module", params=sorted(CELLS), ids=lambda c: "-".join(c))
def served(request, tiny_models, private_cache, tmp_path_factory):
    """One worker per cell, shared by the tests of that cell, stopped after them."""
    arch, kind, template = request.param
    spec = tiny_models.folder(arch, template) if kind == "folder" else tiny_models.gguf(arch, kind, template)
    runtime = tmp_path_factory.mktemp("rt")
    socket = ensure_worker(str(spec), runtime / "worker-cell.sock")
    yield Served(arch, kind, template, CELLS[request.param], str(spec), socket)
    kill_workers(runtime)
    shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture(scope="module")
def in_process(served):
    """The same spec loaded in this process: the reference for the worker's answers."""
    from model.engine import Engine
    from model.loading import load_model

    return Engine(load_model(served.spec))


def collect(client: WorkerClient, request: dict) -> tuple[list[str], dict]:
    deltas, done = [], {}
    for event in client.generate(request):
        if event["type"] == "delta":
            deltas.append(event["text"])
        elif event["type"] in ("done", "error"):
            done = event
    return deltas, done


def test_worker_reports_model_runner_and_chat_format(served):
    with WorkerClient(socket_path=served.socket) as client:
        deltas, done = collect(client, {"messages": MESSAGES, "params": {"max_new_tokens": 1}})
        info = client.info()
    assert done["type"] == "done", done
    assert info["ready"] is True and info["load_error"] is None
    assert info["model"] == (Path(served.spec).name if served.kind == "folder" else Path(served.spec).stem)
    assert info["runner"] == runner_for(served.arch, served.kind)
    assert info["chat_format"] == served.chat_kind
    assert info["context_window"] == 2048  # the tiny config's, read back through the file


def test_prompt_is_built_in_the_chat_format(served, in_process):
    fmt = in_process.chat_format
    assert fmt.kind == served.chat_kind
    assert MARKERS[served.chat_kind] in fmt.render(MESSAGES)
    if served.chat_kind == "starchat":  # each StarChat marker is one added token
        ids = fmt.encode(MESSAGES)
        assert in_process.tokenizer.convert_tokens_to_ids("<|user|>") in ids
        assert in_process.tokenizer.convert_tokens_to_ids("<|end|>") in fmt.stop_token_ids
    with WorkerClient(socket_path=served.socket) as client:
        _, done = collect(client, {"messages": MESSAGES, "params": {"max_new_tokens": 1}})
    assert done["usage"]["prompt_tokens"] == len(fmt.encode(MESSAGES))  # the worker built the same prompt


def test_streams_deltas_that_add_up_to_the_answer(served, in_process):
    params = {"max_new_tokens": NEW_TOKENS, "temperature": 0.0}
    with WorkerClient(socket_path=served.socket) as client:
        deltas, done = collect(client, {"messages": MESSAGES, "params": params})
    assert done["type"] == "done", done
    assert done["finish_reason"] in ("length", "stop")
    usage = done["usage"]
    if done["finish_reason"] == "length":
        assert usage["tokens"] == NEW_TOKENS
    assert 1 <= usage["tokens"] <= NEW_TOKENS
    assert len(deltas) >= 2 and all(deltas)
    reference = in_process.generate(MESSAGES, params)
    assert "".join(deltas) == "".join(reference)  # greedy: the same tokens as in-process
    assert usage["tokens"] == reference.usage["tokens"]


def test_cancel_mid_stream(served):
    budget = 1024
    with WorkerClient(socket_path=served.socket) as client:
        client.connect()
        client._send({"messages": MESSAGES, "params": {"max_new_tokens": budget}, "type": "generate", "id": 7})
        cancelled_at = None
        while True:
            frame = client._recv()
            if frame["type"] == "delta" and cancelled_at is None:
                client._send({"type": "cancel", "id": 7})
                cancelled_at = time.monotonic()
            elif frame["type"] in ("done", "error"):
                break
        assert cancelled_at is not None, "no delta arrived"
        assert frame["type"] == "done" and frame["finish_reason"] == "cancelled", frame
        assert 1 <= frame["usage"]["tokens"] < budget
        deltas, done = collect(client, {"messages": MESSAGES, "params": {"max_new_tokens": 4}})
    assert done["type"] == "done" and done["finish_reason"] in ("length", "stop") and deltas


@pytest.mark.parametrize("qtype", QTYPES)
def test_starcoder_gguf_is_refused_with_a_sentence(qtype, tiny_models, private_cache, tmp_path):
    """transformers reads no ``starcoder`` GGUF: the worker says so instead of failing later."""
    spec = tiny_models.gguf("gpt_bigcode", qtype)
    socket = ensure_worker(str(spec), tmp_path / "worker-refused.sock")
    try:
        with WorkerClient(socket_path=socket) as client:
            deltas, done = collect(client, {"messages": MESSAGES, "params": {"max_new_tokens": 4}})
            info = client.info()
    finally:
        kill_workers(tmp_path)
    assert not deltas
    assert done["type"] == "error"
    assert done["message"] == (f"The model worker could not load {str(spec)!r}: "
                               "GGUF model with architecture starcoder is not supported yet.")
    assert info["ready"] is False and info["load_error"] == done["message"]
