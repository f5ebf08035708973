"""The feedback log through the real server, worker and embedded model: nothing while the
setting is off (the default); with it on, an accepted completion (the client executes the
item's command, as editors do on accept), an applied Fix and a chat turn each write one row."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

from lsp_server import commands
from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT

from .conftest import CONFIG, ENV, SAMPLE, capabilities, install_editor, open_document, rng
from .test_inline_completion import CODE

pytestmark = pytest.mark.asyncio(loop_scope="session")

GENERATION = {"max_new_tokens": 96, "temperature": 0.0}
SUFFIX = "\n\n\ndef main():\n    pass\n"


def settings(enabled: bool) -> dict:
    return {"starchat": {"generation": GENERATION, "completion": {"maxNewTokens": 16},
                         "feedback": {"enabled": enabled}}}


@pytest_lsp.fixture(config=CONFIG, scope="session")
async def fb(lsp_client: LanguageClient, tmp_path_factory):
    """A server of its own, in a workspace that holds a copy of the sample (to fix) and a
    file to complete in."""
    root = tmp_path_factory.mktemp("feedback-workspace")
    source = root / "stats.py"
    shutil.copy(SAMPLE, source)
    (root / "pkg").mkdir()
    (root / "pkg" / "lines.py").write_text(CODE + SUFFIX)
    install_editor(lsp_client)
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=capabilities(), root_uri=root.as_uri(), initialization_options=settings(False)))
    lsp_client.root = root  # type: ignore[attr-defined]
    lsp_client.uri = open_document(lsp_client, source)  # type: ignore[attr-defined]
    lsp_client.lines_uri = open_document(lsp_client, root / "pkg" / "lines.py")  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


def log_file(root: Path) -> Path:
    """The server's log of ``root`` (its data dir is the e2e suite's)."""
    from model.runtime.feedback_log import log_path

    before = os.environ.get("STARCHAT_DATA_DIR")
    os.environ["STARCHAT_DATA_DIR"] = ENV["STARCHAT_DATA_DIR"]
    try:
        return log_path(root)
    finally:
        if before is None:
            del os.environ["STARCHAT_DATA_DIR"]
        else:
            os.environ["STARCHAT_DATA_DIR"] = before


async def rows(path: Path, count: int, timeout: float = 10.0) -> list[dict]:
    """The log's rows once there are ``count`` (rows are written in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def execute(client: LanguageClient, command: str, argument: dict):
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=command, arguments=[argument]))


async def inline_items(client: LanguageClient) -> list[dict]:
    """``textDocument/inlineCompletion`` at the end of CODE, as raw JSON (an editor's view)."""
    msg_id = f"fb-{uuid.uuid4().hex}"
    position = {"line": CODE.count("\n"), "character": len(CODE.rsplit("\n", 1)[-1])}
    params = client.protocol._converter.structure(
        {"textDocument": {"uri": client.lines_uri}, "position": position,  # type: ignore[attr-defined]
         "context": {"triggerKind": 2}}, types.InlineCompletionParams)
    future = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
    client.protocol._result_types.pop(msg_id, None)
    items = await asyncio.wait_for(asyncio.wrap_future(future), 300)
    assert isinstance(items, list) and items, items
    return items


async def use_the_assistant(client: LanguageClient) -> tuple[dict, dict, dict]:
    """What a user does: take a suggestion (running its command, if any), apply a Fix, chat."""
    (item,) = await inline_items(client)
    if "command" in item:  # what VS Code and Neovim do when the user accepts the item
        command = item["command"]
        accepted = await execute(client, command["command"], *command["arguments"])
        item["accepted"] = accepted
    client.applied_edits.clear()  # type: ignore[attr-defined]
    fix = await execute(client, commands.FIX, {"textDocument": {"uri": client.uri}, "range": rng(3, 9)})  # type: ignore[attr-defined]
    assert fix["applied"] is True, fix
    chat = await execute(client, commands.CHAT, {"message": "Say hello in one word."})
    assert chat["reply"].strip()
    return item, fix, chat


async def test_off_by_default_nothing_is_written(fb: LanguageClient):
    path = log_file(fb.root)  # type: ignore[attr-defined]
    path.unlink(missing_ok=True)
    fb.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=settings(False)))
    item, _, _ = await use_the_assistant(fb)
    assert "command" not in item  # nothing to run on accept
    # A command that comes anyway (an editor's stale item) logs nothing either.
    assert await execute(fb, commands.ACCEPT_COMPLETION, {"id": "0" * 32}) == {"logged": False}
    await asyncio.sleep(0.5)
    assert not path.exists() and not list(path.parent.glob(f"{fb.root.name}-*"))  # type: ignore[attr-defined]


async def test_on_each_kind_writes_one_row_and_clear_deletes_them(fb: LanguageClient):
    root: Path = fb.root  # type: ignore[attr-defined]
    path = log_file(root)
    path.unlink(missing_ok=True)
    fb.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=settings(True)))
    item, fix, chat = await use_the_assistant(fb)
    assert item["command"]["command"] == commands.ACCEPT_COMPLETION
    assert item["accepted"] == {"logged": True}
    found = await rows(path, 3)
    assert [r["kind"] for r in found] == ["completion", "edit", "chat"], found
    assert {r["workspace"] for r in found} == {os.path.realpath(root)}
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)

    completion, edit, turn = found
    assert completion["prefix"] == CODE and completion["suffix"] == SUFFIX
    assert completion["path"] == "pkg/lines.py" and completion["completion"] == item["insertText"]

    assert edit["command"] == "fix"
    system, user, reply = edit["messages"]
    assert system == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    assert user["role"] == "user" and "Fix the bug" in user["content"] and "def average" in user["content"]
    assert reply == {"role": "assistant", "content": fix["reply"]}

    assert turn["command"] == "chat" and turn["conversation"] == chat["conversationId"]
    assert turn["messages"][1:] == [{"role": "user", "content": "Say hello in one word."},
                                    {"role": "assistant", "content": chat["reply"]}]

    # The same suggestion's command again: already logged, nothing more.
    assert await execute(fb, commands.ACCEPT_COMPLETION, *item["command"]["arguments"]) == {"logged": False}
    size = path.stat().st_size
    cleared = await execute(fb, commands.CLEAR_FEEDBACK, {})
    assert cleared == {"deleted": [{"path": str(path), "bytes": size}]}
    assert not path.exists()
    fb.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=settings(False)))


async def test_a_log_at_its_cap_takes_no_more_rows_and_says_so_once(fb: LanguageClient):
    from model.runtime.feedback_log import append_row

    root: Path = fb.root  # type: ignore[attr-defined]
    path = log_file(root)
    path.unlink(missing_ok=True)
    row = {"kind": "completion", "workspace": os.path.realpath(root), "path": "pkg/lines.py",
           "prefix": "x", "suffix": "", "completion": "y" * 200_000, "time": 1.0}
    for _ in range(5):
        assert append_row(path, row, 2**20)
    # One more row that leaves 10 bytes of the 1 MB: too few for the next.
    empty = len(json.dumps({**row, "completion": ""}, separators=(",", ":"))) + 1
    rest = 2**20 - path.stat().st_size - empty - 10
    assert append_row(path, {**row, "completion": "y" * rest}, 2**20)
    size = path.stat().st_size
    assert size == 2**20 - 10
    settings_on = settings(True)
    settings_on["starchat"]["feedback"]["maxMegabytes"] = 1
    fb.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=settings_on))
    fb.messages.clear()
    for _ in range(2):
        (item,) = await inline_items(fb)
        assert await execute(fb, commands.ACCEPT_COMPLETION, *item["command"]["arguments"]) == {"logged": True}
    deadline = time.monotonic() + 10
    while not [m for m in fb.messages if "reached its size cap" in m.message]:
        assert time.monotonic() < deadline, [m.message for m in fb.messages]
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    (warning,) = [m for m in fb.messages if "reached its size cap" in m.message]  # once
    assert warning.type == types.MessageType.Warning and str(path) in warning.message
    assert path.stat().st_size == size
    with pytest.raises(JsonRpcException) as caught:  # a command without its id
        await execute(fb, commands.ACCEPT_COMPLETION, {})
    assert caught.value.code == types.ErrorCodes.InvalidParams
    await execute(fb, commands.CLEAR_FEEDBACK, {"workspace": str(root)})
    assert not path.exists()
    fb.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=settings(False)))
