"""The server over real stdio, without waiting for the model: start-up, actions, bad input."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

from lsp_server import commands

from .conftest import CONFIG, SAMPLE, code_actions, raw_request, rng, start_session

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_initialize_is_fast_and_advertises_the_contract(tmp_path):
    spawned = time.perf_counter()
    client = await CONFIG.start()
    try:
        # Python's imports (lsprotocol alone is ~0.6 s) happen before the server can read;
        # wait for them with a request it answers with an error, then time initialize.
        with pytest.raises(JsonRpcException):
            await raw_request(client, "starchat/notAMethod", {})
        started = time.perf_counter()
        result = await start_session(client, tmp_path)
        elapsed = time.perf_counter() - started
        caps = result.capabilities
        assert elapsed < 0.5, f"initialize took {elapsed:.2f} s"
        assert started - spawned < 5
        assert set(caps.execute_command_provider.commands) >= set(commands.ALL_COMMANDS)
        kinds = caps.code_action_provider.code_action_kinds
        assert types.CodeActionKind.QuickFix in kinds
        assert types.CodeActionKind.RefactorRewrite in kinds
        assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    finally:
        await client.shutdown_session()
        await client.stop()


async def test_code_actions_list_without_the_model(client: LanguageClient):
    started = time.perf_counter()
    actions = await code_actions(client, 3, 9)
    assert time.perf_counter() - started < 0.5
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
    for _ in range(50):
        if client.messages:
            break
        await asyncio.sleep(0.05)
    warnings = [m for m in client.messages if m.type == types.MessageType.Warning]
    assert warnings and "max_new_tokens" in warnings[0].message
    # Back to the test settings for the other tests.
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"starchat": {"generation": {"max_new_tokens": 64}}}
        )
    )


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
