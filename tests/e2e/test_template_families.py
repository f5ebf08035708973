"""Models of every family answer, in their own chat format, through the user's entry points.

Tiny random-weight Llama models (tests/tiny_models.py) carry each family's real chat template
(tests/data/templates: Gemma-2, Mistral/Mixtral, Mistral-Nemo, Llama-3.2, Qwen2.5, Phi-3,
DeepSeek-Coder, StarCoder2-instruct) or none (a base model: dialogue prompting), as GGUF files
(llama.cpp) and as folders (torch). ``starchat ask`` must answer with each, and the prompt
the worker built must be the family's rendering of our turns (its token count equals what
the family's chat format makes of them: a template that raised, or a fallback, would not).
Gemma-2's template refuses a system turn and demands alternating roles; a GGUF carrying it
then answers every LSP action: chat (and its second turn), explain, fix, inline completion.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig

from lsp_server import commands
from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT, chat_format_for
from tests.cleanup import stop_workers
from tests.tiny_models import FAMILIES, tokenizer_for

from .conftest import SAMPLE, SERVER_COMMAND, capabilities, install_editor, open_document, rng

QUESTION = "Write a function that adds two numbers."
NEW_TOKENS = 6
FOLDER_FAMILIES = ("gemma-2", "mistral", "phi-3", "starcoder2-instruct", "none")
CASES = [(family, "gguf") for family in (*sorted(FAMILIES), "none")] + [(f, "folder") for f in FOLDER_FAMILIES]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "STARCHAT_RUNTIME_DIR": str(root / "run"),
           "STARCHAT_CACHE_DIR": str(root / "cache"), "STARCHAT_DATA_DIR": str(root / "data")}
    env.pop("STARCHAT_ENGINE", None)
    yield env
    stop_workers(Path(env["STARCHAT_RUNTIME_DIR"]))


def _model(tiny_models, family: str, kind: str) -> Path:
    if kind == "gguf":
        return tiny_models.gguf("llama", "Q8_0", template=family)
    return tiny_models.folder("llama", template=family)


def _expected_prompt_tokens(family: str) -> int:
    fmt = chat_format_for(tokenizer_for(family))
    return len(fmt.encode([{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                           {"role": "user", "content": QUESTION}]))


@pytest.mark.parametrize(("family", "kind"), CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_ask_answers_in_the_familys_format(family, kind, tiny_models, env):
    model = _model(tiny_models, family, kind)
    proc = subprocess.run([sys.executable, "-m", "lsp_server", "ask", "--model", str(model),
                           "--max-new-tokens", str(NEW_TOKENS), "--stats", QUESTION],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    assert stats["engine"] == ("llama.cpp" if kind == "gguf" else "torch")
    assert 1 <= stats["tokens"] <= NEW_TOKENS  # random weights: the text itself is gibberish
    assert stats["prompt_tokens"] == _expected_prompt_tokens(family)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_gemma2_gguf_answers_every_lsp_action(tiny_models, env):
    gguf = tiny_models.gguf("llama", "Q8_0", template="gemma-2")
    client = await ClientServerConfig(server_command=SERVER_COMMAND, server_env=env).start()
    try:
        install_editor(client)
        await client.initialize_session(types.InitializeParams(
            capabilities=capabilities(), root_uri=SAMPLE.parents[2].as_uri(),
            initialization_options={"starchat": {"model": str(gguf),
                                                 "generation": {"max_new_tokens": NEW_TOKENS, "temperature": 0.0}}},
        ))
        open_document(client, SAMPLE)
        uri = SAMPLE.as_uri()

        async def run(command: str, argument: dict) -> dict:
            return await asyncio.wait_for(client.workspace_execute_command_async(
                types.ExecuteCommandParams(command=command, arguments=[argument])), 600)

        first = await run(commands.CHAT, {"message": "Say hello."})
        assert first["reply"] and first["conversationId"]
        second = await run(commands.CHAT, {"message": "And again.", "conversationId": first["conversationId"]})
        assert second["reply"]  # system + user + assistant + user: merged and alternating
        explained = await run(commands.EXPLAIN, {"textDocument": {"uri": uri}, "range": rng(3, 9)})
        assert explained["reply"]
        fixed = await run(commands.FIX, {"textDocument": {"uri": uri}, "range": rng(3, 9)})
        assert "applied" in fixed and fixed["conversationId"]
        completion = await asyncio.wait_for(client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=7, character=4),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))), 600)
        assert completion is None or isinstance(completion, (list, types.InlineCompletionList))  # not an error
        await client.shutdown_session()
    finally:
        await client.stop()
