"""In-process tests of the conversation store (a real SQLite file in a temp dir)."""

from __future__ import annotations

import json

import pytest

from lsp_server.store import ConversationStore, UnknownConversation


def test_turns_survive_reopening_and_are_per_workspace(tmp_path):
    path = tmp_path / "c.sqlite3"
    store = ConversationStore("file:///a", path)
    cid = store.create()
    store.add_turn(cid, "What is 2+2?", "4", title="What is 2+2?")
    store.close()  # a restart: a fresh connection sees the committed turn
    again = ConversationStore("file:///a", path)
    assert again.messages(cid) == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    assert again.list()[0]["title"] == "What is 2+2?"
    other = ConversationStore("file:///b", path)
    assert other.list() == [] and not other.exists(cid)
    with pytest.raises(UnknownConversation):
        other.messages(cid)
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_export_writes_chatml_rows_with_the_system_prompt(tmp_path):
    store = ConversationStore("file:///a", tmp_path / "c.sqlite3")
    first = store.create()
    store.add_turn(first, "hi", "hello")
    store.add_turn(first, "and?", "more")
    store.create()  # empty conversations are not exported
    out = tmp_path / "out" / "chats.jsonl"
    assert store.export_jsonl(out, "SYSTEM") == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{"messages": [
        {"role": "system", "content": "SYSTEM"},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and?"}, {"role": "assistant", "content": "more"},
    ]}]


def test_delete_removes_messages(tmp_path):
    store = ConversationStore("w", tmp_path / "c.sqlite3")
    cid = store.create()
    store.add_turn(cid, "a", "b")
    store.delete(cid)
    assert not store.exists(cid)
    assert store._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
