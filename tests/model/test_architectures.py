"""Serving coverage: the model families users bring, as folders and as GGUF files.

Each cell of docs/architectures.md is one parameter of the ``served`` fixture: a tiny
random-weight ``llama``, ``gpt_bigcode`` (StarCoder), ``starcoder2`` or ``qwen2`` model
(tests/tiny_models.py, no hub) as a model folder or as a Q8_0 / Q4_0 GGUF file, served by a
real worker process on one engine. Every cell goes through load (what the worker reports)
-> chat format -> streamed generation -> cancel mid-stream. Random weights write
gibberish, so the tests assert behaviour (formats, token counts, deltas, finish reasons,
engines and runners), never the quality of the text.

The engines (the last part of a cell's id):
- ``torch``: model folders; and the torch fallback for GGUF files (``STARCHAT_ENGINE=torch``:
  transformers de-quantizes the file), kept for two cells only because it is slow; a
  ``gpt_bigcode`` GGUF file is refused there with a sentence (transformers reads no
  ``starcoder`` GGUF), see ``test_starcoder_gguf_is_refused_on_torch_with_a_sentence``;
- ``llama.cpp``: every GGUF file by default, the ``starcoder`` one included. Its greedy
  answer is compared with the same file run through ``model.runtime.llamacpp_engine`` in this
  process (llama.cpp is not bit-identical to torch, so never with a torch run).
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.serving.client import WorkerClient, ensure_worker
from tests.tiny_models import ARCHS, QTYPES

from .conftest import kill_workers

MESSAGES = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
NEW_TOKENS = 12
TORCH, LLAMACPP = "torch", "llama.cpp"

# (arch, "folder" | qtype, tokenizer template, engine) -> the chat format the worker must pick.
CELLS = {
    **{(arch, "folder", "chatml", TORCH): "template" for arch in ARCHS},
    **{(arch, q, "chatml", LLAMACPP): "template" for arch in ARCHS for q in QTYPES},
    # The torch fallback for GGUF files: one cell on our own runner, one on transformers.
    ("llama", "Q8_0", "chatml", TORCH): "template",
    ("starcoder2", "Q4_0", "chatml", TORCH): "template",
    # No chat template: StarCoder with the StarChat tokens added (the StarChat recipe)
    # gets the StarChat template; base models without those tokens get dialogue prompting.
    ("gpt_bigcode", "folder", "starchat", TORCH): "starchat",
    ("starcoder2", "folder", "none", TORCH): "dialogue",
    ("qwen2", "Q4_0", "none", LLAMACPP): "dialogue",
}
# What the prompt looks like in each format.
MARKERS = {"template": "<|im_start|>user\n", "starchat": "<|user|>\n", "dialogue": "Human: "}


def runner_for(arch: str, kind: str, engine: str) -> str:
    """The runner that serves a cell: llama.cpp for GGUF files on its engine; on torch our
    own forward pass for plain Llama on the CPU (folders and de-quantized GGUF files
    alike), transformers for the other families."""
    if engine == LLAMACPP:
        return LLAMACPP
    return "lean" if arch == "llama" else "transformers"


@dataclass
class Served:
    arch: str
    kind: str
    template: str
    engine: str
    chat_kind: str
    spec: str
    socket: Path


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """The torch path de-quantizes GGUF files into the model cache: keep those copies out
    of the user's."""
    path = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STARCHAT_CACHE_DIR", str(path))
        mp.delenv("STARCHAT_ENGINE", raising=False)
        yield path
    shutil.rmtree(path, ignore_errors=True)


def start_worker(spec: str, socket: Path, engine: str) -> Path:
    """A worker on ``engine``: ``STARCHAT_ENGINE=torch`` in its environment forces torch."""
    with pytest.MonkeyPatch.context() as mp:
        if engine == TORCH:
            mp.setenv("STARCHAT_ENGINE", "torch")
        else:
            mp.delenv("STARCHAT_ENGINE", raising=False)
        return ensure_worker(spec, socket)


@pytest.fixture(scope="module", params=sorted(CELLS), ids=lambda c: "-".join(c))
def served(request, tiny_models, private_cache, tmp_path_factory):
    """One worker per cell, shared by the tests of that cell, stopped after them."""
    arch, kind, template, engine = request.param
    spec = tiny_models.folder(arch, template) if kind == "folder" else tiny_models.gguf(arch, kind, template)
    runtime = tmp_path_factory.mktemp("rt")
    socket = start_worker(str(spec), runtime / "worker-cell.sock", engine)
    yield Served(arch, kind, template, engine, CELLS[request.param], str(spec), socket)
    kill_workers(runtime)
    shutil.rmtree(runtime, ignore_errors=True)


class LlamaCppReference:
    """``model.runtime.llamacpp_engine`` in this process, with the torch Engine's ``generate`` shape."""

    def __init__(self, spec: str):
        from model.runtime import llamacpp_engine

        self.engine = llamacpp_engine.load(spec, slots=1)
        self.chat_format = self.engine.chat_format
        self.tokenizer = self.engine.tokenizer

    def generate(self, messages: list[dict], params: dict):
        from model.prompt.params import GenerationParams

        deltas: list[str] = []
        outcome = self.engine.run(self.chat_format.encode(messages), GenerationParams.from_dict(params),
                                  threading.Event(), deltas.append)
        return Answer(deltas, outcome.usage)


class Answer(list):
    def __init__(self, deltas: list[str], usage: dict):
        super().__init__(deltas)
        self.usage = usage


@pytest.fixture(scope="module")
def in_process(served):
    """The same spec loaded in this process on the same engine: the reference for the
    worker's answers."""
    if served.engine == LLAMACPP:
        ref = LlamaCppReference(served.spec)
        yield ref
        ref.engine.server = None  # the server stops when the last reference goes
        return
    from model.runtime.engine import Engine
    from model.runtime.loading import load_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STARCHAT_ENGINE", "torch")
        yield Engine(load_model(served.spec))


def collect(client: WorkerClient, request: dict) -> tuple[list[str], dict]:
    deltas, done = [], {}
    for event in client.generate(request):
        if event["type"] == "delta":
            deltas.append(event["text"])
        elif event["type"] in ("done", "error"):
            done = event
    return deltas, done


def test_worker_reports_model_engine_runner_and_chat_format(served):
    with WorkerClient(socket_path=served.socket) as client:
        deltas, done = collect(client, {"messages": MESSAGES, "params": {"max_new_tokens": 1}})
        info = client.info()
    assert done["type"] == "done", done
    assert info["ready"] is True and info["load_error"] is None
    assert info["model"] == (Path(served.spec).name if served.kind == "folder" else Path(served.spec).stem)
    assert info["engine"] == served.engine
    assert info["runner"] == runner_for(served.arch, served.kind, served.engine)
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
    assert usage["prompt_tokens"] == len(in_process.chat_format.encode(MESSAGES))
    assert len(deltas) >= 2 and all(deltas)
    reference = in_process.generate(MESSAGES, params)
    assert "".join(deltas) == "".join(reference)  # greedy: the same tokens as in-process, same engine
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


def test_starcoder_gguf_is_refused_on_torch_with_a_sentence(tiny_models, private_cache, tmp_path):
    """transformers reads no ``starcoder`` GGUF: on the torch fallback the worker says so
    instead of failing later (llama.cpp serves the same file: the ``gpt_bigcode-Q*`` cells)."""
    spec = tiny_models.gguf("gpt_bigcode", "Q4_0")
    socket = start_worker(str(spec), tmp_path / "worker-refused.sock", TORCH)
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
