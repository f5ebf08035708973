"""One rule set for generation settings, end to end, and no torch where none is needed.

The language server and ``starchat ask`` run as real processes under an import watch
(``tests.import_guard``) against one real worker of this module: a value the worker would
refuse is one warning in the editor (the field keeps its default, chats go on), the same
value on the command line exits 2 with the same sentence, and neither the server
(initialize, settings, code actions, chat) nor ``ask`` on a running worker imports torch or
transformers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from lsp_server import commands
from model.prompt.params import GenerationParams
from tests.import_guard import guarded_command, heavy_imports
from tests.model.conftest import kill_workers

from .conftest import SAMPLE, capabilities, code_actions, install_editor, open_document


def sentence(field: str, value) -> str:
    """What the worker's rules say about ``field: value``."""
    problems = GenerationParams.parse({field: value})[1]
    assert set(problems) == {field}
    return problems[field]


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory):
    """Private runtime and data dirs with one running worker (the embedded model)."""
    runtime = tmp_path_factory.mktemp("settings-rt")
    env = {**os.environ, "STARCHAT_RUNTIME_DIR": str(runtime),
           "STARCHAT_DATA_DIR": str(tmp_path_factory.mktemp("settings-data")), "PYTHONUNBUFFERED": "1"}
    started = subprocess.run(
        [sys.executable, "-c", "from model.serving.client import ensure_worker; ensure_worker('default')"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert started.returncode == 0, started.stderr
    yield env
    kill_workers(runtime)


async def warnings_about(client: LanguageClient, field: str, settle: float = 1.0) -> list[str]:
    """The warnings naming ``field``: waits for the first (failing after 30 s), then a
    little longer so that a repeated warning would be counted too."""
    def matching() -> list[str]:
        return [m.message for m in client.messages
                if m.type == types.MessageType.Warning and f"starchat.generation.{field}" in m.message]

    deadline = time.monotonic() + 30
    while not matching():
        assert time.monotonic() < deadline, f"no warning about {field}: {client.messages}"
        await asyncio.sleep(0.05)
    await asyncio.sleep(settle)
    return matching()


async def chat(client: LanguageClient, message: str) -> dict:
    return await asyncio.wait_for(client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=commands.CHAT, arguments=[{"message": message}])
    ), timeout=240)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_bad_generation_setting_is_one_warning_and_its_default(worker_env, tmp_path):
    record = tmp_path / "heavy-imports.txt"
    config = ClientServerConfig(server_command=guarded_command(record, ["lsp_server", "lsp"]),
                                server_env=worker_env)
    client = await config.start()
    try:
        install_editor(client)
        await client.initialize_session(types.InitializeParams(
            capabilities=capabilities(), root_uri=tmp_path.as_uri(),
            initialization_options={"starchat": {"generation": {"temperature": 50, "max_new_tokens": 12}}},
        ))
        [warning] = await warnings_about(client, "temperature")
        assert sentence("temperature", 50) in warning and "Using the default 0.0" in warning
        assert not [m for m in client.messages if "max_new_tokens" in m.message]  # the valid field is kept

        open_document(client, SAMPLE)
        assert await code_actions(client, 3, 9)
        first = await chat(client, "Say hello.")
        assert first["reply"].strip()  # the worker took the settings the server kept

        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"starchat": {"generation": {"repetition_penalty": 0, "max_new_tokens": 2**64,
                                                  "top_k": 5}}}))
        [penalty] = await warnings_about(client, "repetition_penalty")
        [tokens] = await warnings_about(client, "max_new_tokens", settle=0)
        assert sentence("repetition_penalty", 0) in penalty
        assert sentence("max_new_tokens", 2**64) in tokens
        assert len(await warnings_about(client, "temperature", settle=0)) == 1  # not repeated
        second = await chat(client, "Say yes.")
        assert second["reply"].strip()
    finally:
        await client.shutdown_session()
        await client.stop()
    assert heavy_imports(record) == ""


@pytest.mark.parametrize("args,field,value", [
    (["ask", "hi", "--temperature", "50"], "temperature", 50),
    (["chat", "--repetition-penalty", "0"], "repetition_penalty", 0),
    (["ask", "hi", "--max-new-tokens", str(2**64)], "max_new_tokens", 2**64),
    (["ask", "hi", "--temperature", "nan"], "temperature", float("nan")),
])
def test_the_same_value_on_the_command_line_exits_2_with_the_same_sentence(args, field, value, tmp_path):
    env = {**os.environ, "STARCHAT_RUNTIME_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "lsp_server", *args], capture_output=True, text=True,
                       timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"starchat {args[0]}: {sentence(field, value)}\n"
    assert r.stdout == "" and not list(tmp_path.glob("*.sock"))  # refused before any worker


def test_ask_on_a_running_worker_imports_no_torch(worker_env, tmp_path):
    record = tmp_path / "heavy-imports.txt"
    r = subprocess.run(guarded_command(record, ["lsp_server", "ask", "What does this code do?",
                                                "--max-new-tokens", "24", "--file", str(SAMPLE),
                                                "--lines", "4-9"]),
                       capture_output=True, text=True, timeout=300, env=worker_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert heavy_imports(record) == ""
