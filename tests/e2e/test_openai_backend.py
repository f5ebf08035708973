"""The real language server against a real OpenAI-compatible server on loopback.

Each test runs against both real servers on the embedded model, one at a time:
``transformers serve`` and llama.cpp's own server (``openai_server``, tests/conftest.py).
``starchat lsp`` is configured with
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
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException
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


def settings(url: str, model: str | None = None, max_new_tokens: int = 24) -> dict:
    """The editor's settings: the model setting points at the OpenAI-compatible server."""
    backend = {"backend": "openai", "url": url} | ({"model": model} if model else {})
    return {"starchat": {"model": backend,
                         "generation": {"max_new_tokens": max_new_tokens, "temperature": 0.0}}}


async def start_lsp(url: str, model: str | None = None) -> LanguageClient:
    """``starchat lsp`` configured with ``settings(url, model)``."""
    lsp_client = await CONFIG.start()
    install_editor(lsp_client)
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=capabilities(),
            root_uri=SAMPLE.parents[2].as_uri(),
            initialization_options=settings(url, model),
        )
    )
    open_document(lsp_client, SAMPLE)
    return lsp_client


async def stop_lsp(lsp_client: LanguageClient) -> None:
    await lsp_client.shutdown_session()
    await lsp_client.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(openai_server):
    """One ``starchat lsp`` per real server (a static dependency, so each server gets its own)."""
    lsp_client = await start_lsp(openai_server.url)
    yield lsp_client
    await stop_lsp(lsp_client)


async def wait_for_completions(server, count: int) -> None:
    """Wait until the server's log shows ``count`` chat completions (llama.cpp logs from a
    thread of its own, a moment after the fact); fail after 30 s."""
    deadline = time.monotonic() + 30
    while server.completions() < count:
        assert time.monotonic() < deadline, f"{server.kind}: {server.completions()} completions logged, not {count}"
        await asyncio.sleep(0.1)
    assert server.completions() == count


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
    before = openai_server.completions()
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
    await wait_for_completions(openai_server, before + 1)
    assert not RUNTIME.exists() or not list(RUNTIME.rglob("*.sock"))
    assert all(m.type != types.MessageType.Error for m in client.messages)


def set_max_new_tokens(client: LanguageClient, url: str, value: int) -> None:
    """Change the answer length for the requests sent after this (the whole settings, as an
    editor sends them: the model setting stays on the server)."""
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings=settings(url, max_new_tokens=value)))


async def test_cancel_closes_the_http_stream_and_the_server_keeps_serving(client: LanguageClient, openai_server):
    token, msg_id = "openai-cancel", "openai-cancel-req"
    client.progress_reports.setdefault(token, [])
    # An answer long enough to be cancelled: llama.cpp's server writes the module's 24 tokens
    # in a fifth of a second, which can end before the cancel arrives (seen in CI).
    set_max_new_tokens(client, openai_server.url, 512)
    try:
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
    finally:
        set_max_new_tokens(client, openai_server.url, 24)  # the module's other tests expect 24
    result = await asyncio.wait_for(asyncio.wrap_future(future), 60)
    assert result.get("cancelled") is True, f"not cancelled: {result}"
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

    url = openai_server.url
    posts = openai_server.completions()
    r = await starchat_cli("ask", "Write a Python function is_even(n).", "--url", url,
                           "--stats", "--max-new-tokens", "32")
    assert r.returncode == 0, r.stderr
    assert "def is_even" in r.stdout
    assert "Traceback" not in r.stderr
    stats = json.loads(r.stderr.strip().splitlines()[-1])
    assert set(stats) == {"ttft_s", "tokens", "tok_per_s", "prompt_tokens", "engine", "total_s"}  # (no llama.cpp threads)
    assert stats["tokens"] > 0 and stats["prompt_tokens"] > 10 and stats["total_s"] >= stats["ttft_s"] > 0
    assert stats["engine"] == "openai"
    await wait_for_completions(openai_server, posts + 1)
    assert no_local_worker()


async def test_cli_chat_url_answers_two_turns_from_stdin(openai_server):
    url = openai_server.url
    posts = openai_server.completions()
    r = await starchat_cli("chat", "--url", url, "--max-new-tokens", "24",
                           stdin="Write a Python function is_even(n).\nNow write is_odd(n) the same way.\n/exit\n")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "[error" not in r.stderr
    # stdout: "you> ANSWER1\nyou> ANSWER2\nyou> " (the last prompt reads /exit)
    turns = r.stdout.split("you> ")
    assert len(turns) == 4 and turns[0] == "" and turns[3] == "", r.stdout
    assert "def is_even" in turns[1]
    assert "def is_odd" in turns[2]
    await wait_for_completions(openai_server, posts + 2)
    assert no_local_worker()


async def test_cli_ask_url_prints_exactly_the_answer_and_nothing_else(openai_server):
    """stdout is the answer and a newline; stderr is empty: no "Task was destroyed but it is
    pending!" from a stream left open at exit (seen against llama.cpp's server)."""
    import json
    import urllib.request

    from model.backends.openai_backend import build_body
    from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT

    question = "Write a Python function is_even(n)."
    r = await starchat_cli("ask", question, "--url", openai_server.url, "--max-new-tokens", "24")
    assert r.returncode == 0, r.stderr
    assert "Task was destroyed" not in r.stderr and "pending" not in r.stderr, r.stderr
    assert r.stderr == ""
    # The same request, not streamed, straight to the server (greedy: the same answer).
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question}]
    body, _ = build_body({"messages": messages, "params": {"max_new_tokens": 24}}, None, 100_000)
    body.update(stream=False)
    del body["stream_options"]
    req = urllib.request.Request(openai_server.url + "/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    answer = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(req, timeout=120)))
    text = answer["choices"][0]["message"]["content"]
    assert "def is_even" in text
    assert r.stdout == text + "\n"


async def test_cli_url_http_error_is_one_sentence_and_exit_1(openai_server):
    url = openai_server.url + "/no-such-path"
    r = await starchat_cli("ask", "hi", "--url", url, "--api-model", "m", "--max-new-tokens", "4")
    assert r.returncode == 1
    assert r.stderr.startswith(f"starchat ask: The server at {url} answered HTTP 404 Not Found: "), r.stderr
    assert r.stderr.count("\n") == 1 and r.stdout.strip() == ""


def unknown_model_sentence(url: str, listed: str) -> str:
    return f"The server at {url} does not serve the model 'no-such-model'; it lists: {listed}."


async def listed_model(url: str) -> str:
    from model.backends.openai_backend import AsyncOpenAIClient, OpenAISettings

    probe = AsyncOpenAIClient(OpenAISettings(url=url))
    await probe.connect()
    return probe.model


async def test_cli_a_model_the_server_does_not_list_is_exit_2_naming_the_listed_ones(openai_server):
    url = openai_server.url
    sentence = unknown_model_sentence(url, await listed_model(url))
    for command, stdin in (("ask", None), ("chat", "hi\n/exit\n")):
        args = [command] + (["hi"] if command == "ask" else [])
        r = await starchat_cli(*args, "--url", url, "--api-model", "no-such-model", stdin=stdin)
        assert r.returncode == 2, r.stderr
        assert r.stderr == f"starchat {command}: {sentence}\n"
        assert r.stdout == ""
    assert no_local_worker()


async def test_lsp_a_model_the_server_does_not_list_is_an_error_naming_the_listed_ones(openai_server):
    url = openai_server.url
    sentence = unknown_model_sentence(url, await listed_model(url))
    lsp_client = await start_lsp(url, model="no-such-model")
    try:
        with pytest.raises(JsonRpcException) as err:
            await execute(lsp_client, commands.CHAT, {"message": "Say yes."})
        assert sentence in str(err.value)
        errors = [m.message for m in lsp_client.messages if m.type == types.MessageType.Error]
        assert any(sentence in m for m in errors), errors
    finally:
        await stop_lsp(lsp_client)
