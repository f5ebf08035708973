"""Conversations in SQLite (WAL), keyed by workspace root.

Each completed turn (user + assistant) is written in one committed transaction, so a
server restart or crash loses no completed turn. The database lives under
``$STARCHAT_DATA_DIR`` (default ``$XDG_DATA_HOME/starchat``, i.e. ``~/.local/share/starchat``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from model.runtime.paths import data_dir  # one definition: training reads the data dir too

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_workspace ON conversations(workspace, updated);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation_id, id);
"""


class UnknownConversation(KeyError):
    """The conversation id does not exist in this workspace."""


class ConversationStore:
    """Conversations of one workspace (several servers may share the file safely)."""

    def __init__(self, workspace: str, path: Path | None = None) -> None:
        self.workspace = workspace
        if path is None:
            directory = data_dir()
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = directory / "conversations.sqlite3"
        self.path = path
        # autocommit mode; we open explicit transactions where several rows go together.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def create(self, title: str = "") -> str:
        """A new empty conversation; returns its id."""
        conversation_id = uuid.uuid4().hex
        now = time.time()
        self._db.execute(
            "INSERT INTO conversations(id, workspace, title, created, updated) "
            "VALUES (?, ?, ?, ?, ?)",
            (conversation_id, self.workspace, title[:80], now, now),
        )
        return conversation_id

    def exists(self, conversation_id: str) -> bool:
        """Whether the id names a conversation of this workspace."""
        row = self._db.execute(
            "SELECT 1 FROM conversations WHERE id = ? AND workspace = ?",
            (conversation_id, self.workspace),
        ).fetchone()
        return row is not None

    def _require(self, conversation_id: str) -> None:
        if not self.exists(conversation_id):
            raise UnknownConversation(conversation_id)

    def messages(self, conversation_id: str) -> list[dict[str, str]]:
        """The turns so far, oldest first, as ``{"role", "content"}``."""
        self._require(conversation_id)
        rows = self._db.execute(
            "SELECT role, content FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        ).fetchall()
        return [{"role": role, "content": content} for role, content in rows]

    def add_turn(self, conversation_id: str, user: str, assistant: str, title: str = "") -> None:
        """Store one completed exchange atomically (both messages or neither)."""
        self._require(conversation_id)
        now = time.time()
        with self._db:  # one transaction: BEGIN ... COMMIT
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO messages(conversation_id, role, content, created) VALUES (?, ?, ?, ?)",
                [(conversation_id, "user", user, now), (conversation_id, "assistant", assistant, now)],
            )
            self._db.execute(
                "UPDATE conversations SET updated = ?, "
                "title = CASE WHEN title = '' THEN ? ELSE title END WHERE id = ?",
                (now, title[:80], conversation_id),
            )

    def list(self) -> list[dict]:
        """Conversations of this workspace, most recently updated first."""
        rows = self._db.execute(
            "SELECT c.id, c.title, c.created, c.updated, "
            "(SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) "
            "FROM conversations c WHERE c.workspace = ? ORDER BY c.updated DESC",
            (self.workspace,),
        ).fetchall()
        return [
            {"conversationId": cid, "title": title, "created": created, "updated": updated,
             "messages": count}
            for cid, title, created, updated, count in rows
        ]

    def delete(self, conversation_id: str) -> None:
        """Delete a conversation and its messages."""
        self._require(conversation_id)
        self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def export_jsonl(self, path: Path, system_prompt: str) -> int:
        """Write every non-empty conversation as ``{"messages": [...]}`` JSONL; returns rows.

        The file is private to the user (mode 0600, like the database it comes from).
        """
        count = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh name (O_EXCL): nothing planted at a predictable ".tmp" path is followed or
        # clobbered, and whatever fails before the rename takes the partial file with it.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                for conversation in reversed(self.list()):
                    messages = self.messages(conversation["conversationId"])
                    if not messages:
                        continue
                    row = {"messages": [{"role": "system", "content": system_prompt}, *messages]}
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    count += 1
            os.replace(tmp, path)  # readers never see a half-written file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return count
