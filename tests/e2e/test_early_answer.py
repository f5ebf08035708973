"""Early answers, as eglot and lsp-mode get them: the real server, worker and model.

The client here calls itself "Eglot" in ``clientInfo``: the server must answer a
generating command at once with ``state: "started"`` and deliver the result later
(``workspace/applyEdit``, a Markdown document opened with ``window/showDocument``,
``$/progress`` on a token it creates). The shared ``client`` fixture of the other e2e
tests (no clientInfo) keeps the blocking answer; that is tested there, unchanged.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from lsp_server import commands

from .conftest import CONFIG, ENV, SAMPLE, SETTINGS, install_editor, open_document, rng

pytestmark = pytest.mark.asyncio(loop_scope="session")

AVERAGE = rng(3, 9)
WAIT = 300  # generous: only to avoid a hang on a loaded machine


def capabilities(show_document: bool = True) -> types.ClientCapabilities:
    return types.ClientCapabilities(
        window=types.WindowClientCapabilities(
            work_done_progress=True,
            show_document=types.ShowDocumentClientCapabilities(support=show_document),
        ),
        workspace=types.WorkspaceClientCapabilities(
            apply_edit=True,
            configuration=True,
            workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True),
        ),
    )


async def start_emacs_like(name: str = "Eglot", show_document: bool = True,
                           settings: dict | None = None) -> LanguageClient:
    """A second server process (same worker, same data dir), greeted by an Emacs client."""
    client = await CONFIG.start()
    install_editor(client)
    client.shown = []  # type: ignore[attr-defined]
    # pytest-lsp's own handler only records the params; ours also reads the file.
    client.protocol.fm._features.pop(types.WINDOW_SHOW_DOCUMENT, None)

    @client.feature(types.WINDOW_SHOW_DOCUMENT)
    def show(params: types.ShowDocumentParams):
        # What the document holds at the moment the server asks to show it.
        client.shown.append((params, Path(params.uri[len("file://"):]).read_text()))
        return types.ShowDocumentResult(success=True)

    await client.initialize_session(
        types.InitializeParams(
            capabilities=capabilities(show_document),
            client_info=types.ClientInfo(name=name, version="1.9"),
            root_uri=SAMPLE.parents[2].as_uri(),
            initialization_options=settings or SETTINGS,
        )
    )
    open_document(client, SAMPLE)
    return client


async def stop(client: LanguageClient) -> None:
    await client.shutdown_session()
    await client.stop()


async def execute(client: LanguageClient, command: str, argument: dict) -> dict:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=command, arguments=[argument])
    )


async def until(predicate, seconds: float = WAIT):
    for _ in range(int(seconds / 0.05)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting")


def ended(client: LanguageClient, token: str) -> bool:
    values = client.progress_reports.get(token) or []
    return bool(values) and isinstance(values[-1], types.WorkDoneProgressEnd)


def stored_reply(conversation_id: str) -> str | None:
    db = sqlite3.connect(Path(ENV["STARCHAT_DATA_DIR"]) / "conversations.sqlite3")
    try:
        row = db.execute(
            "SELECT content FROM messages WHERE conversation_id = ? AND role = 'assistant' "
            "ORDER BY id DESC", (conversation_id,)
        ).fetchone()
    finally:
        db.close()
    return row[0] if row else None


async def test_explain_answers_at_once_and_opens_the_conversation_document():
    client = await start_emacs_like()
    try:
        answer = await execute(client, commands.EXPLAIN,
                               {"textDocument": {"uri": SAMPLE.as_uri()}, "range": AVERAGE})
        # Answered before the generation ended: no reply yet, a token and a document.
        assert answer["state"] == "started"
        assert set(answer) == {"conversationId", "state", "token", "document"}
        token = answer["token"]
        assert not ended(client, token)
        path = Path(answer["document"][len("file://"):])
        assert path.parent == Path(ENV["STARCHAT_DATA_DIR"]) / "conversations"
        assert path.name == f"{answer['conversationId']}.md"

        await until(lambda: ended(client, token))
        values = client.progress_reports[token]
        assert isinstance(values[0], types.WorkDoneProgressBegin)
        assert values[-1].message == "Done"
        deltas = "".join(v.message for v in values if isinstance(v, types.WorkDoneProgressReport))
        reply = await until(lambda: stored_reply(answer["conversationId"]))
        assert deltas == reply and len(reply.split()) >= 5

        # Shown at the start (no answer yet) and again at the end (the whole answer).
        await until(lambda: len(client.shown) >= 2)
        (first, first_text), (last, last_text) = client.shown[0], client.shown[-1]
        assert first.uri == last.uri == answer["document"]
        assert first.take_focus is False
        assert "still writing" in first_text and reply not in first_text
        assert last_text.endswith(reply.rstrip() + "\n")
        assert "still writing" not in last_text
        assert "Explain what this python code does" in last_text
        lines = last_text.splitlines()
        assert lines[last.selection.start.line] == "## StarChat"
        assert path.read_text() == last_text
    finally:
        await stop(client)


async def test_fix_answers_at_once_and_applies_a_versioned_edit():
    client = await start_emacs_like()
    try:
        answer = await execute(client, commands.FIX,
                               {"textDocument": {"uri": SAMPLE.as_uri()}, "range": AVERAGE})
        assert answer["state"] == "started" and "document" not in answer
        assert not client.applied_edits
        (params,) = await until(lambda: client.applied_edits)
        (change,) = params.edit.document_changes
        assert change.text_document.uri == SAMPLE.as_uri()
        assert change.text_document.version == 1
        assert "def average" in change.edits[0].new_text
        await until(lambda: ended(client, answer["token"]))
        assert stored_reply(answer["conversationId"])
        assert client.shown == []
    finally:
        await stop(client)


async def test_progress_cancel_stops_an_early_answer():
    long = {"starchat": {"generation": {"max_new_tokens": 400}}}
    client = await start_emacs_like(settings=long)
    try:
        answer = await execute(client, commands.CHAT,
                               {"message": "Write a long story about a robot who paints."})
        token = answer["token"]
        await until(lambda: any(isinstance(v, types.WorkDoneProgressReport)
                                for v in client.progress_reports.get(token, [])))
        client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=token))
        await until(lambda: ended(client, token), 30)
        assert client.progress_reports[token][-1].message == "Cancelled"
        text = Path(answer["document"][len("file://"):]).read_text()
        assert text.rstrip().endswith("_[stopped]_")
        assert stored_reply(answer["conversationId"]) is None  # cancelled answers are not kept
    finally:
        await stop(client)


async def test_without_show_document_the_answer_comes_as_a_message():
    client = await start_emacs_like(name="emacs", show_document=False)
    try:
        answer = await execute(client, commands.CHAT, {"message": "Say hello in one word."})
        reply = await until(lambda: stored_reply(answer["conversationId"]))
        message = await until(lambda: [m for m in client.messages if reply in m.message])
        assert str(Path(answer["document"][len("file://"):])) in message[0].message
    finally:
        await stop(client)


async def test_other_clients_and_the_wait_setting_keep_the_blocking_answer():
    client = await start_emacs_like(
        settings={"starchat": {**SETTINGS["starchat"], "commands": {"answer": "wait"}}}
    )
    try:
        result = await execute(client, commands.CHAT, {"message": "Say yes."})
        assert "state" not in result and result["reply"]
    finally:
        await stop(client)
    client = await start_emacs_like(
        name="Neovim", settings={"starchat": {**SETTINGS["starchat"],
                                              "commands": {"answer": "sometimes"}}}
    )
    try:
        result = await execute(client, commands.CHAT, {"message": "Say yes."})
        assert "state" not in result and result["reply"]
        warning = await until(lambda: [m for m in client.messages if "commands.answer" in m.message])
        assert '"auto", "wait" or "early"' in warning[0].message
    finally:
        await stop(client)


async def test_a_configuration_pull_with_nothing_keeps_the_initialization_options():
    # Eglot sends didChangeConfiguration {} on connect and answers the pull with null.
    short = {"starchat": {"generation": {"max_new_tokens": 4}, "commands": {"answer": "wait"}}}
    client = await start_emacs_like(settings=short)
    try:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        await asyncio.sleep(1.0)
        result = await execute(client, commands.CHAT,
                               {"message": "Write a long story about a robot who paints."})
        assert 0 < len(result["reply"].split()) <= 6, result["reply"]
    finally:
        await stop(client)
