"""The server over real stdio, without waiting for the model: start-up, actions, bad input."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

from lsp_server import commands

from .conftest import (
    CONFIG,
    SAMPLE,
    SETTINGS,
    code_actions,
    first_delta,
    rng,
    send_explain,
    set_max_new_tokens,
    start_session,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


def loading_progress(client: LanguageClient) -> list:
    """The values of the server's "Loading model" progress, in the order they arrived."""
    for values in client.progress_reports.values():
        if values and isinstance(values[0], types.WorkDoneProgressBegin) and values[0].title == "Loading model":
            return values
    return []


def mapped_torch(pid: int) -> bool:
    """Whether torch's native library is loaded in the process (Linux: /proc/PID/maps)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


async def test_initialize_answers_before_the_model_loads_and_advertises_the_contract(tmp_path):
    client = await CONFIG.start()
    try:
        # Speed is measured by benchmarks/bench_lsp.py; here the limit only guards against a
        # hang. What makes initialize fast is checked as behaviour: the answer comes before
        # the model is ready, and the server has not loaded torch to give it.
        result = await asyncio.wait_for(start_session(client, tmp_path), 120)
        assert not any(isinstance(v, types.WorkDoneProgressEnd) for v in loading_progress(client))
        if Path("/proc").is_dir():
            assert not mapped_torch(client._server.pid)
        caps = result.capabilities
        assert set(caps.execute_command_provider.commands) >= set(commands.ALL_COMMANDS)
        kinds = caps.code_action_provider.code_action_kinds
        assert types.CodeActionKind.QuickFix in kinds
        assert types.CodeActionKind.RefactorRewrite in kinds
        assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
        # ...and the model then loads in the background, reporting progress.
        deadline = time.monotonic() + 300
        while not (values := loading_progress(client)) or not isinstance(values[-1], types.WorkDoneProgressEnd):
            assert time.monotonic() < deadline, f"the model did not load in 300 s: {values}"
            await asyncio.sleep(0.05)
        assert values[-1].message.startswith("Model ready")  # "Model ready (llama.cpp)"
    finally:
        await client.shutdown_session()
        await client.stop()


async def test_code_actions_list_without_the_model(client: LanguageClient):
    # Answered by the server alone: while the model is busy with an answer, the actions come
    # back before that answer ends (order, not speed: bench_lsp.py measures the latency).
    set_max_new_tokens(client, 1000)  # an answer long enough to be still streaming
    try:
        busy = send_explain(client, "busy-model", "busy-model-req")
        await first_delta(client, "busy-model")
    finally:
        set_max_new_tokens(client, SETTINGS["starchat"]["generation"]["max_new_tokens"])
    actions = await asyncio.wait_for(code_actions(client, 3, 9), 60)
    model_was_busy = not busy.done()
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="busy-model-req"))
    await asyncio.wait_for(asyncio.wrap_future(busy), 60)
    assert model_was_busy, "the code actions came only after the answer had ended"
    by_command = {a["command"]["command"]: a for a in actions}
    assert set(by_command) == {
        commands.EXPLAIN, commands.FIX, commands.WRITE_TESTS, commands.ADD_DOCSTRING
    }
    assert by_command[commands.FIX]["kind"] == "refactor.rewrite"
    assert by_command[commands.EXPLAIN]["title"] == "StarChat: Explain selection"
    args = by_command[commands.EXPLAIN]["command"]["arguments"][0]
    assert args["textDocument"]["uri"] == SAMPLE.as_uri() and args["range"]["end"]["line"] == 9


async def test_fix_is_a_quickfix_carrying_the_diagnostics(client: LanguageClient):
    diagnostic = types.Diagnostic(
        range=types.Range(start=types.Position(8, 4), end=types.Position(8, 40)),
        message="off by one",
        source="review",
    )
    actions = await code_actions(
        client, 3, 9, diagnostics=[diagnostic], only=[types.CodeActionKind.QuickFix]
    )
    assert [a["command"]["command"] for a in actions] == [commands.FIX]
    assert actions[0]["kind"] == "quickfix"
    assert actions[0]["diagnostics"][0]["message"] == "off by one"
    assert actions[0]["command"]["arguments"][0]["diagnostics"][0]["message"] == "off by one"


async def test_empty_range_has_no_actions(client: LanguageClient):
    assert not await code_actions(client, 3, 3)


async def _error_of(client: LanguageClient, command: str, arguments) -> JsonRpcException:
    with pytest.raises(JsonRpcException) as caught:
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=command, arguments=arguments)
        )
    return caught.value


@pytest.mark.parametrize(
    ("command", "arguments", "expected"),
    [
        (commands.EXPLAIN, [{"textDocument": {"uri": "file:///nowhere.py"}, "range": rng(0, 1)}],
         "is not open"),
        (commands.EXPLAIN, [{"textDocument": {"uri": SAMPLE.as_uri()}, "range": rng(0, 500)}],
         "outside the document"),
        (commands.EXPLAIN, [{"textDocument": {"uri": SAMPLE.as_uri()}, "range": rng(3, 3, 900)}],
         "past the end of line"),
        (commands.FIX, [{"textDocument": {"uri": SAMPLE.as_uri()}, "range": "3-9"}],
         "range must be an object"),
        (commands.FIX, ["not an object"], "must be an object"),
        (commands.FIX, [{"textDocument": {"uri": SAMPLE.as_uri()}}], "needs a range"),
        (commands.CHAT, [{"message": 42}], "message must be a non-empty string"),
        (commands.CHAT, [{}], "needs message"),
        (commands.CHAT, [{"message": "hi", "conversationId": "feedbeef"}],
         "Unknown conversation feedbeef"),
        (commands.DELETE_CONVERSATION, [{"conversationId": "feedbeef"}],
         "Unknown conversation feedbeef"),
        (commands.EXPORT_CONVERSATIONS, [{}], "needs path"),
        ("starchat.nope", [{}], "Unknown command"),
    ],
)
async def test_bad_input_is_an_invalid_params_sentence(
    client: LanguageClient, command, arguments, expected
):
    error = await _error_of(client, command, arguments)
    assert error.code == types.ErrorCodes.InvalidParams
    assert expected in error.message


async def _write_raw(client: LanguageClient, body: bytes) -> None:
    client._server.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await client._server.stdin.drain()


async def test_malformed_json_body_gets_an_error_and_the_server_lives_on(client):
    await _write_raw(client, b'{"jsonrpc": "2.0", "id": 99, "method": ')
    # A request whose params have the wrong shape for its method is answered too.
    answer: Future = Future()
    client.protocol._request_futures["bad-shape"] = answer
    await _write_raw(
        client,
        b'{"jsonrpc": "2.0", "id": "bad-shape", "method": "textDocument/codeAction", '
        b'"params": {"textDocument": 5, "range": null}}',
    )
    with pytest.raises(JsonRpcException) as caught:
        await asyncio.wait_for(asyncio.wrap_future(answer), 10)
    assert caught.value.code == types.ErrorCodes.InvalidParams
    assert "textDocument/codeAction" in caught.value.message
    listed = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=commands.LIST_CONVERSATIONS, arguments=[{}])
    )
    assert "conversations" in listed


async def test_bad_settings_warn_and_fall_back_to_defaults(client: LanguageClient):
    client.messages.clear()
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"starchat": {"generation": {"max_new_tokens": -3, "temperature": 0.0}}}
        )
    )
    try:
        deadline = time.monotonic() + 60  # only against a hang
        while not (warnings := [m for m in client.messages if m.type == types.MessageType.Warning]):
            assert time.monotonic() < deadline, "no warning in 60 s"
            await asyncio.sleep(0.05)
        assert "max_new_tokens" in warnings[0].message
    finally:  # back to the suite's settings for the other tests
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=SETTINGS))


async def test_conversation_commands_round_trip(client: LanguageClient, tmp_path):
    created = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=commands.NEW_CONVERSATION, arguments=[{}])
    )
    cid = created["conversationId"]
    listed = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=commands.LIST_CONVERSATIONS, arguments=[{}])
    )
    assert cid in [c["conversationId"] for c in listed["conversations"]]
    deleted = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(
            command=commands.DELETE_CONVERSATION, arguments=[{"conversationId": cid}]
        )
    )
    assert deleted["deleted"] is True
    error = await _error_of(client, commands.DELETE_CONVERSATION, [{"conversationId": cid}])
    assert "Unknown conversation" in error.message
