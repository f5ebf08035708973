"""The editor setting ``starchat.model = "default+runs/x"``: the relative adapter path means one
inside the workspace folder (not the server's working directory), the worker serves it on
llama.cpp, chat and completion take their own adapter scale (completions the one the
adapter carries), and a spec that names no
adapter is one warning with the reason."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig

from lsp_server import commands
from model.runtime.spec import ADAPTER_FILE
from tests.cleanup import stop_workers
from tests.model.test_spec import write_adapter

from .conftest import SERVER_COMMAND, capabilities, install_editor


async def chat(client, message: str) -> dict:
    return await asyncio.wait_for(client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=commands.CHAT, arguments=[{"message": message}])), timeout=240)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_workspace_relative_adapter_spec(tmp_path):
    workspace, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (workspace / "runs" / "mine").mkdir(parents=True)
    elsewhere.mkdir()
    # an adapter that fits the embedded model (SmolLM2: 30 layers of width 576)
    # (carrying a completion scale, as `starchat adapt` writes one: completions apply it unless set)
    write_adapter(workspace / "runs" / "mine" / ADAPTER_FILE, n_embd=576, layers=30, rank=4, completion_scale=0.5)
    runtime = tmp_path / "run"
    env = {**os.environ, "STARCHAT_RUNTIME_DIR": str(runtime), "STARCHAT_DATA_DIR": str(tmp_path / "data"),
           "PYTHONUNBUFFERED": "1"}
    # the server runs from another folder: only the workspace root can make "runs/mine" mean the adapter
    command = ["bash", "-c", f'cd "{elsewhere}" && exec "$@"', "cd", *SERVER_COMMAND]
    client = await ClientServerConfig(server_command=command, server_env=env).start()
    try:
        install_editor(client)
        await client.initialize_session(types.InitializeParams(
            capabilities=capabilities(), root_uri=workspace.as_uri(),
            initialization_options={"starchat": {"model": "default+runs/mine",
                                                 "generation": {"max_new_tokens": 8, "adapter_scale": 0}}}))
        reply = await chat(client, "Say hello.")
        assert reply["reply"].strip()
        from model.serving.client import WorkerClient

        sockets = list(runtime.rglob("worker-*.sock"))
        assert len(sockets) == 1
        with WorkerClient(socket_path=sockets[0], autostart=False) as worker:
            info = worker.info()
        assert info["engine"] == "llama.cpp"
        assert info["adapter"] == str((workspace / "runs" / "mine" / ADAPTER_FILE).resolve())
        assert info["adapter_completion_scale"] == 0.5

        # a spec whose adapter is missing: one error message naming it, no crash
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"starchat": {"model": "default+runs/absent"}}))
        with pytest.raises(Exception, match="runs/absent does not exist"):
            await chat(client, "Say hello.")
        deadline = time.monotonic() + 30
        while not any("runs/absent" in m.message for m in client.messages):
            assert time.monotonic() < deadline, client.messages
            await asyncio.sleep(0.05)
    finally:
        await client.shutdown_session()
        await client.stop()
        stop_workers(runtime)
