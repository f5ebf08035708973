"""A worker that dies mid-answer: an error response plus a message, and the server lives on.

The test runs its own server with its own runtime dir, so the worker it kills is its own:
no other test loses its worker, and the order the tests run in does not matter.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig

from lsp_server import commands

from .conftest import ENV, SAMPLE, SERVER_COMMAND, capabilities, install_editor, open_document, rng

pytestmark = pytest.mark.asyncio(loop_scope="session")


def worker_pid(runtime: Path) -> int:
    """Ask the running worker for its pid through the real client."""
    from model.serving.client import WorkerClient

    (sock,) = runtime.rglob("*.sock")
    with WorkerClient(socket_path=sock, autostart=False) as worker:
        return int(worker.info()["pid"])


async def wait_for(condition, what: str, timeout: float) -> None:
    """Poll ``condition`` until true; fail with ``what`` after ``timeout`` s (only against a hang)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s")
        await asyncio.sleep(0.02)


async def test_dead_worker_gives_an_error_and_a_message_then_recovers(tmp_path):
    from tests.cleanup import stop_workers

    runtime = tmp_path / "run"
    config = ClientServerConfig(
        server_command=SERVER_COMMAND,
        server_env={**ENV, "STARCHAT_RUNTIME_DIR": str(runtime),
                    "STARCHAT_DATA_DIR": str(tmp_path / "data")},
    )
    client = await config.start()
    try:
        install_editor(client)
        # A long answer (greedy), so that it is still streaming when the worker is killed.
        await client.initialize_session(types.InitializeParams(
            capabilities=capabilities(), root_uri=SAMPLE.parents[2].as_uri(),
            initialization_options={"starchat": {"generation": {"max_new_tokens": 400,
                                                                "temperature": 0.0}}},
        ))
        open_document(client, SAMPLE)
        warm = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=commands.CHAT, arguments=[{"message": "Say hi."}])
        )
        assert warm["reply"]
        first = worker_pid(runtime)  # asked before the answer, so the kill follows the delta at once
        token = "doomed"
        client.progress_reports.setdefault(token, [])
        request = asyncio.ensure_future(
            client.workspace_execute_command_async(
                types.ExecuteCommandParams(
                    command=commands.EXPLAIN,
                    arguments=[{"textDocument": {"uri": SAMPLE.as_uri()}, "range": rng(3, 9)}],
                    work_done_token=token,
                )
            )
        )
        # Kill it mid-answer: after the first streamed delta, before the reply.
        await wait_for(
            lambda: request.done() or any(isinstance(v, types.WorkDoneProgressReport)
                                          for v in client.progress_reports[token]),
            "no delta arrived", 300,
        )
        assert not request.done(), "the answer finished before the worker could be killed"
        client.messages.clear()
        os.kill(first, signal.SIGKILL)
        with pytest.raises(JsonRpcException) as caught:
            await asyncio.wait_for(request, 60)
        assert "worker" in caught.value.message.lower()
        await wait_for(lambda: any(m.type == types.MessageType.Error for m in client.messages),
                       "no error message was shown", 30)
        errors = [m for m in client.messages if m.type == types.MessageType.Error]
        assert "worker" in errors[0].message.lower()

        again = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=commands.CHAT, arguments=[{"message": "Say hi."}])
        )
        assert again["reply"]
        assert worker_pid(runtime) != first  # a fresh worker answered
    finally:
        await client.shutdown_session()
        await client.stop()
        stop_workers(runtime)
