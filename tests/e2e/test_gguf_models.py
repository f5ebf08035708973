"""GGUF files of other architectures answer through the user's entry points.

A tiny random-weight ``starcoder2``, ``qwen2`` and ``gpt_bigcode`` (StarCoder) GGUF file
(tests/tiny_models.py) is given to ``starchat ask --model FILE.gguf`` (a real subprocess)
and, as the ``starchat.model`` setting, to the real language server, whose
``starchat.chat`` command must stream a reply from a worker serving that file. Each
architecture gets private runtime, cache and data dirs; the worker started by ``ask`` is
the one the server then uses (same runtime dir), and is stopped at the end. Both run on
llama.cpp inside the worker, the default engine for GGUF files (``STARCHAT_ENGINE`` is
cleared so a user's setting cannot move them to torch; the torch fallback is covered in
tests/model/test_architectures.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig

from lsp_server import commands
from tests.cleanup import stop_workers

from .conftest import SAMPLE, SERVER_COMMAND, capabilities, install_editor, open_document

# gpt_bigcode is llama.cpp's `starcoder` GGUF, which only llama.cpp reads.
FILES = {"starcoder2": "Q8_0", "qwen2": "Q4_0", "gpt_bigcode": "Q4_0"}
NEW_TOKENS = 8
# What serves a .gguf spec by default: llama.cpp inside the worker, the file as it is.
GGUF_ENGINE = GGUF_RUNNER = "llama.cpp"


@dataclass
class Setup:
    gguf: Path
    env: dict


@pytest.fixture(scope="module", params=sorted(FILES))
def setup(request, tiny_models, tmp_path_factory):
    arch = request.param
    gguf = tiny_models.gguf(arch, FILES[arch])
    root = tmp_path_factory.mktemp(f"gguf-{arch}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "STARCHAT_RUNTIME_DIR": str(root / "run"), "STARCHAT_CACHE_DIR": str(root / "cache"),
           "STARCHAT_DATA_DIR": str(root / "data")}
    env.pop("STARCHAT_ENGINE", None)
    yield Setup(gguf, env)
    stop_workers(Path(env["STARCHAT_RUNTIME_DIR"]))
    shutil.rmtree(root, ignore_errors=True)


def worker_info(runtime: Path) -> dict:
    from model.serving.client import WorkerClient

    (sock,) = runtime.rglob("*.sock")
    with WorkerClient(socket_path=sock, autostart=False) as client:
        return client.info()


def test_ask_answers_with_the_gguf_file(setup):
    proc = subprocess.run(
        [sys.executable, "-m", "lsp_server", "ask", "--model", str(setup.gguf),
         "--max-new-tokens", str(NEW_TOKENS), "--stats", "Write a function that adds two numbers."],
        env=setup.env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    assert 1 <= stats["tokens"] <= NEW_TOKENS and stats["prompt_tokens"] > 20
    assert stats["engine"] == GGUF_ENGINE  # random weights: the text itself is gibberish
    info = worker_info(Path(setup.env["STARCHAT_RUNTIME_DIR"]))
    assert info["spec"] == str(setup.gguf) and info["model"] == setup.gguf.stem
    assert info["engine"] == GGUF_ENGINE and info["runner"] == GGUF_RUNNER
    assert info["chat_format"] == "template" and info["context_window"] == 2048


@pytest.mark.asyncio(loop_scope="module")
async def test_language_server_chats_with_the_gguf_file(setup):
    config = ClientServerConfig(server_command=SERVER_COMMAND, server_env=setup.env)
    client = await config.start()
    try:
        install_editor(client)
        await client.initialize_session(types.InitializeParams(
            capabilities=capabilities(),
            root_uri=SAMPLE.parents[2].as_uri(),
            initialization_options={"starchat": {
                "model": str(setup.gguf),
                "generation": {"max_new_tokens": NEW_TOKENS, "temperature": 0.0},
            }},
        ))
        open_document(client, SAMPLE)
        token = "chat-gguf"
        client.progress_reports.setdefault(token, [])
        result = await asyncio.wait_for(client.workspace_execute_command_async(types.ExecuteCommandParams(
            command=commands.CHAT, arguments=[{"message": "Say hello."}], work_done_token=token,
        )), 300)
        messages = [v.message for v in client.progress_reports[token]
                    if isinstance(v, types.WorkDoneProgressReport) and v.message is not None]
        assert result["reply"] and result["conversationId"]
        assert "".join(messages) == result["reply"]  # streamed as $/progress deltas
        info = worker_info(Path(setup.env["STARCHAT_RUNTIME_DIR"]))
        assert info["spec"] == str(setup.gguf) and info["ready"] is True
        assert info["engine"] == GGUF_ENGINE and info["runner"] == GGUF_RUNNER
        await client.shutdown_session()
    finally:
        await client.stop()
