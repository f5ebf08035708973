"""The real language server against a real OpenAI-compatible server on loopback.

``transformers serve`` runs the embedded model; ``starchat lsp`` is configured with
``{"model": {"backend": "openai", "url": ...}}`` and must work unchanged: streamed
``$/progress`` deltas, cancellation, and no local worker started. The server gets a
private runtime dir so that a worker started by mistake would show up there.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from lsp_server import commands

from .conftest import ENV, SAMPLE, SERVER_COMMAND, capabilities, install_editor, open_document, rng

pytestmark = pytest.mark.asyncio(loop_scope="module")

AVERAGE = rng(3, 9)  # the buggy `average` function of the sample
# Created by the first fixture that writes there, removed by _module_tmp.
_TMP = Path(tempfile.gettempdir()) / f"starchat-e2e-openai-{uuid.uuid4().hex[:8]}"
RUNTIME = _TMP / "run"
CONFIG = ClientServerConfig(
    server_command=SERVER_COMMAND,
    server_env={**ENV, "STARCHAT_RUNTIME_DIR": str(RUNTIME), "STARCHAT_DATA_DIR": str(_TMP / "data")},
)


@pytest.fixture(scope="module", autouse=True)
def _module_tmp():
    """Remove this module's temp dir (and stop a worker started by mistake) at the end."""
    from tests.cleanup import stop_workers

    yield _TMP
    if _TMP.exists():
        stop_workers(_TMP)
        shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(scope="module")
def openai_server(transformers_server):
    """(base url, log path) of ``transformers serve`` (tests/conftest.py)."""
    return transformers_server.url, transformers_server.log


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient, request):
    """``starchat lsp`` whose model setting points at the OpenAI-compatible server."""
    url, _ = request.getfixturevalue("openai_server")
    install_editor(lsp_client)
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=capabilities(),
            root_uri=SAMPLE.parents[2].as_uri(),
            initialization_options={"starchat": {
                "model": {"backend": "openai", "url": url},
                "generation": {"max_new_tokens": 24, "temperature": 0.0},
            }},
        )
    )
    open_document(lsp_client, SAMPLE)
    yield
    await lsp_client.shutdown_session()


async def execute(client: LanguageClient, command: str, argument: dict, token=None):
    if token is not None:
        client.progress_reports.setdefault(token, [])
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=command, arguments=[argument], work_done_token=token)
    )


def reports(client: LanguageClient, token) -> list[str]:
    return [v.message for v in client.progress_reports.get(token, [])
            if isinstance(v, types.WorkDoneProgressReport)]


async def test_explain_streams_from_the_openai_server(client: LanguageClient, openai_server):
    _, log_path = openai_server
    token = "openai-explain"
    result = await execute(
        client, commands.EXPLAIN, {"textDocument": {"uri": SAMPLE.as_uri()}, "range": AVERAGE}, token
    )
    values = client.progress_reports[token]
    assert isinstance(values[0], types.WorkDoneProgressBegin)
    assert isinstance(values[-1], types.WorkDoneProgressEnd)
    messages = reports(client, token)
    assert len(messages) >= 2
    assert "".join(messages) == result["reply"]
    assert len(result["reply"].split()) >= 5
    # The answer came from the HTTP server, and no local worker was started for it.
    assert "POST /v1/chat/completions" in log_path.read_text()
    assert not RUNTIME.exists() or not list(RUNTIME.rglob("*.sock"))
    assert all(m.type != types.MessageType.Error for m in client.messages)


async def test_cancel_closes_the_http_stream_and_the_server_keeps_serving(client: LanguageClient):
    token, msg_id = "openai-cancel", "openai-cancel-req"
    client.progress_reports.setdefault(token, [])
    future = client.protocol.send_request(
        types.WORKSPACE_EXECUTE_COMMAND,
        types.ExecuteCommandParams(
            command=commands.EXPLAIN,
            arguments=[{"textDocument": {"uri": SAMPLE.as_uri()}, "range": AVERAGE}],
            work_done_token=token,
        ),
        msg_id=msg_id,
    )
    deadline = time.monotonic() + 300  # only against a hang: transformers serve is slow here
    while not reports(client, token):
        assert not future.done(), f"answered before any delta: {future.result()}"
        assert time.monotonic() < deadline, "no delta arrived in 300 s"
        await asyncio.sleep(0.02)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
    result = await asyncio.wait_for(asyncio.wrap_future(future), 60)
    assert result["cancelled"] is True
    assert "".join(reports(client, token)) == result["reply"]
    after = await execute(client, commands.CHAT, {"message": "Say yes."})
    assert after["reply"] and "cancelled" not in after


async def test_model_settings_select_the_backend_and_bad_ones_warn():
    from lsp_server.config import model_backend, parse_settings

    settings, problems = parse_settings({"model": {"backend": "openai", "url": "http://h:1/v1",
                                                   "model": "m", "read_timeout": 5}})
    assert problems == []
    assert model_backend(settings) == {"backend": "openai", "url": "http://h:1/v1", "model": "m",
                                       "read_timeout": 5}
    settings, problems = parse_settings({"model": "default"})
    assert model_backend(settings)["backend"] == "worker" and settings.backend == ()
    settings, problems = parse_settings({"model": {"backend": "openai", "url": "ftp://h", "colour": 1}})
    assert settings.model == "default" and settings.backend == ()
    assert problems == [
        "Unknown setting starchat.model.colour is ignored.",
        "Setting starchat.model is invalid: The backend url 'ftp://h' must start with http:// or "
        "https:// and name a host. Using \"default\".",
    ]


# `starchat ask/chat --url`: the command line against the same server, as a subprocess.

CLI_ENV = {**ENV, "STARCHAT_RUNTIME_DIR": str(_TMP / "cli-run"), "STARCHAT_DATA_DIR": str(_TMP / "cli-data")}


async def starchat_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``python -m lsp_server ARGS`` in a thread, so the module's event loop is not blocked."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "lsp_server", *args], input=stdin,
        capture_output=True, text=True, timeout=300, env=CLI_ENV,
    )


def no_local_worker() -> bool:
    return not list((_TMP / "cli-run").rglob("*.sock"))


async def test_cli_ask_url_streams_code_and_prints_stats(openai_server):
    import json

    url, log_path = openai_server
    posts = log_path.read_text().count("POST /v1/chat/completions")
    r = await starchat_cli("ask", "Write a Python function is_even(n).", "--url", url,
                           "--stats", "--max-new-tokens", "32")
    assert r.returncode == 0, r.stderr
    assert "def is_even" in r.stdout
    assert "Traceback" not in r.stderr
    stats = json.loads(r.stderr.strip().splitlines()[-1])
    assert set(stats) == {"ttft_s", "tokens", "tok_per_s", "prompt_tokens", "engine"}
    assert stats["tokens"] > 0 and stats["prompt_tokens"] > 10 and stats["ttft_s"] > 0
    assert stats["engine"] == "openai"
    assert log_path.read_text().count("POST /v1/chat/completions") == posts + 1
    assert no_local_worker()


async def test_cli_chat_url_answers_two_turns_from_stdin(openai_server):
    url, log_path = openai_server
    posts = log_path.read_text().count("POST /v1/chat/completions")
    r = await starchat_cli("chat", "--url", url, "--max-new-tokens", "24",
                           stdin="Write a Python function is_even(n).\nNow write is_odd(n) the same way.\n/exit\n")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "[error" not in r.stderr
    # stdout: "you> ANSWER1\nyou> ANSWER2\nyou> " (the last prompt reads /exit)
    turns = r.stdout.split("you> ")
    assert len(turns) == 4 and turns[0] == "" and turns[3] == "", r.stdout
    assert "def is_even" in turns[1]
    assert "def is_odd" in turns[2]
    assert log_path.read_text().count("POST /v1/chat/completions") == posts + 2
    assert no_local_worker()


async def test_cli_url_http_error_is_one_sentence_and_exit_1(openai_server):
    url, _ = openai_server
    r = await starchat_cli("ask", "hi", "--url", url, "--api-model", "no-such-model", "--max-new-tokens", "4")
    assert r.returncode == 1
    assert f"starchat ask: The server at {url} answered HTTP 4" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout.strip() == ""
