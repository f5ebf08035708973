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


def test_a_failed_export_leaves_no_temp_file_and_the_old_file_intact(tmp_path, monkeypatch):
    store = ConversationStore("file:///a", tmp_path / "c.sqlite3")
    for n in range(3):
        store.add_turn(store.create(), f"q{n}", f"a{n}")
    out = tmp_path / "out" / "chats.jsonl"
    out.parent.mkdir()
    out.write_text("the previous export\n")
    (out.parent / "chats.jsonl.tmp").symlink_to(tmp_path / "planted")  # a predictable name, planted
    calls = []

    def failing(conversation_id):  # a fault injected on purpose: the disk fills up mid-export
        calls.append(conversation_id)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]

    monkeypatch.setattr(store, "messages", failing)
    with pytest.raises(OSError, match="No space left"):
        store.export_jsonl(out, "SYSTEM")
    assert sorted(p.name for p in out.parent.iterdir()) == ["chats.jsonl", "chats.jsonl.tmp"]
    assert out.read_text() == "the previous export\n"
    assert not (tmp_path / "planted").exists()  # the planted link was not followed
    monkeypatch.undo()
    assert store.export_jsonl(out, "SYSTEM") == 3
    assert len(out.read_text().splitlines()) == 3 and oct(out.stat().st_mode & 0o777) == "0o600"


def test_delete_removes_messages(tmp_path):
    store = ConversationStore("w", tmp_path / "c.sqlite3")
    cid = store.create()
    store.add_turn(cid, "a", "b")
    store.delete(cid)
    assert not store.exists(cid)
    assert store._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
