"""A worker that dies mid-answer: an error response plus a message, and the server lives on.

Runs last in the session (file order): the next request starts a fresh worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

from lsp_server import commands

from .conftest import ENV, SAMPLE, rng

pytestmark = pytest.mark.asyncio(loop_scope="session")


def worker_pid() -> int:
    """Ask the running worker for its pid through the real client."""
    from model.client import WorkerClient

    (sock,) = Path(ENV["STARCHAT_RUNTIME_DIR"]).rglob("*.sock")
    with WorkerClient(socket_path=sock, autostart=False) as worker:
        return int(worker.info()["pid"])


async def test_dead_worker_gives_an_error_and_a_message_then_recovers(client: LanguageClient):
    token = "doomed"
    client.progress_reports.setdefault(token, [])
    client.messages.clear()
    request = asyncio.ensure_future(
        client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command=commands.EXPLAIN,
                arguments=[{"textDocument": {"uri": SAMPLE.as_uri()}, "range": rng(3, 9)}],
                work_done_token=token,
            )
        )
    )
    for _ in range(3000):
        if any(isinstance(v, types.WorkDoneProgressReport) for v in client.progress_reports[token]):
            break
        await asyncio.sleep(0.02)
    os.kill(worker_pid(), signal.SIGKILL)
    with pytest.raises(JsonRpcException) as caught:
        await asyncio.wait_for(request, 30)
    assert "worker" in caught.value.message.lower()
    errors = [m for m in client.messages if m.type == types.MessageType.Error]
    assert errors and "worker" in errors[0].message.lower()

    again = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=commands.CHAT, arguments=[{"message": "Say hi."}])
    )
    assert again["reply"]
