"""The real server, the real worker and the embedded model: streaming, fix, chat, cancel.

Generation is greedy with short answers (see conftest SETTINGS); one server and one
worker serve all tests of the session.
"""

from __future__ import annotations

import ast
import asyncio
import json

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from lsp_server import commands

from .conftest import (
    CONFIG,
    SAMPLE,
    SETTINGS,
    first_delta,
    open_document,
    rng,
    send_explain,
    set_max_new_tokens,
    start_session,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

AVERAGE = rng(3, 9)  # the buggy `average` function of the sample


async def execute(client: LanguageClient, command: str, argument: dict, token=None):
    if token is not None:  # pytest-lsp warns about tokens it did not see created
        client.progress_reports.setdefault(token, [])
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=command, arguments=[argument], work_done_token=token)
    )


def deltas(client: LanguageClient, token) -> tuple[list, list[str]]:
    values = client.progress_reports[token]
    return values, [v.message for v in values if isinstance(v, types.WorkDoneProgressReport)]


async def test_explain_streams_deltas_that_add_up_to_the_reply(client: LanguageClient):
    token = "explain-1"
    result = await execute(
        client, commands.EXPLAIN, {"textDocument": {"uri": SAMPLE.as_uri()}, "range": AVERAGE},
        token,
    )
    values, messages = deltas(client, token)
    assert isinstance(values[0], types.WorkDoneProgressBegin)
    assert isinstance(values[-1], types.WorkDoneProgressEnd)
    assert len(messages) >= 2
    assert "".join(messages) == result["reply"]
    assert len(result["reply"].split()) >= 5
    assert result["conversationId"]


async def test_without_a_token_the_server_creates_one(client: LanguageClient):
    before = set(client.progress_reports)
    result = await execute(client, commands.CHAT, {"message": "Say hello in one word."})
    created = [t for t in client.progress_reports if t not in before]
    assert len(created) == 1
    _, messages = deltas(client, created[0])
    assert "".join(messages) == result["reply"]


async def test_fix_sends_a_versioned_edit_inside_the_range_that_parses(client: LanguageClient):
    client.applied_edits.clear()
    result = await execute(
        client, commands.FIX, {"textDocument": {"uri": SAMPLE.as_uri()}, "range": AVERAGE},
        "fix-1",
    )
    assert result["applied"] is True, result
    (params,) = client.applied_edits
    (change,) = params.edit.document_changes
    assert change.text_document.uri == SAMPLE.as_uri()
    assert change.text_document.version == client.versions[SAMPLE.as_uri()]
    (edit,) = change.edits
    assert (edit.range.start.line, edit.range.end.line) == (3, 9)
    ast.parse(edit.new_text)
    assert "def average" in edit.new_text


async def test_a_stale_fix_is_refused(client: LanguageClient, tmp_path):
    path = tmp_path / "stale.py"
    path.write_text(SAMPLE.read_text())
    uri = open_document(client, path)
    task = asyncio.ensure_future(
        execute(client, commands.FIX, {"textDocument": {"uri": uri}, "range": AVERAGE}, "fix-2")
    )
    await first_delta(client, "fix-2")
    # The user types while the model answers.
    client.versions[uri] = 2
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text="x = 1\n")],
        )
    )
    result = await task
    assert result["applied"] is False
    assert "changed" in result["message"]


async def test_chat_remembers_an_earlier_turn(client: LanguageClient):
    first = await execute(
        client, commands.CHAT,
        {"message": "Write a Python function called reverse_words that reverses the order "
                    "of the words in a sentence."},
    )
    cid = first["conversationId"]
    assert "reverse_words" in first["reply"]
    # The follow-up does not name the function: only the earlier turn can supply it.
    second = await execute(
        client, commands.CHAT,
        {"message": "Now write one unit test for that function.", "conversationId": cid},
    )
    assert second["conversationId"] == cid
    assert "reverse_words" in second["reply"]
    listed = await execute(client, commands.LIST_CONVERSATIONS, {})
    entry = next(c for c in listed["conversations"] if c["conversationId"] == cid)
    assert entry["messages"] == 4


@pytest.mark.parametrize("how", ["cancelRequest", "progressCancel"])
async def test_cancel_stops_the_answer_early_and_the_server_keeps_serving(
    client: LanguageClient, how
):
    token = f"cancel-{how}"
    msg_id = f"req-{how}"
    client.progress_reports.setdefault(token, [])
    # A long answer, so that it is still streaming when the cancel arrives on a busy machine.
    set_max_new_tokens(client, 1000)
    try:
        future = send_explain(client, token, msg_id)
        await first_delta(client, token)
    finally:
        set_max_new_tokens(client, SETTINGS["starchat"]["generation"]["max_new_tokens"])
    assert not future.done(), "the answer finished before it could be cancelled"
    if how == "cancelRequest":
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
    else:
        client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=token))
    # Speed is benchmarks/' business; the limit only turns a hang into a failure.
    result = await asyncio.wait_for(asyncio.wrap_future(future), 60)
    assert result["cancelled"] is True  # stopped before the answer's end, not after it
    _, messages = deltas(client, token)
    assert "".join(messages) == result["reply"]  # every delta sent came before the response
    # The worker is free again: the next request is served normally.
    after = await execute(client, commands.CHAT, {"message": "Say yes."})
    assert after["reply"] and "cancelled" not in after


async def test_conversations_survive_a_restart_and_export(client: LanguageClient, tmp_path):
    first = await execute(client, commands.CHAT, {"message": "Remember the number 42."})
    cid = first["conversationId"]
    second = await CONFIG.start()  # another server process: same data dir, same worker
    try:
        await start_session(second, SAMPLE.parents[2])
        listed = await execute(second, commands.LIST_CONVERSATIONS, {})
        assert cid in [c["conversationId"] for c in listed["conversations"]]
        out = tmp_path / "chats.jsonl"
        exported = await execute(second, commands.EXPORT_CONVERSATIONS, {"path": str(out)})
        assert exported["conversations"] >= 1
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        ours = [r for r in rows if r["messages"][1]["content"] == "Remember the number 42."]
        assert ours[0]["messages"][0]["role"] == "system"
        assert ours[0]["messages"][2] == {"role": "assistant", "content": first["reply"]}
        more = await execute(second, commands.CHAT, {"message": "Which number?",
                                                     "conversationId": cid})
        assert more["conversationId"] == cid
    finally:
        await second.shutdown_session()
        await second.stop()
