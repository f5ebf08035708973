"""A conversation as a Markdown file, for editors without a chat view of their own.

Early answers (see ``features/early_answer.py``) put Explain, Write tests and chat
answers here: ``$STARCHAT_DATA_DIR/conversations/<conversationId>.md``. The file is
replaced atomically (write a temporary file, then rename), so an editor that re-reads it
at any moment sees a whole version, never half of one. Nothing reads it back: the
conversation itself lives in the SQLite store.
"""

from __future__ import annotations

import os
from pathlib import Path

from .store import data_dir

#: Seconds between two rewrites of the file while an answer streams in.
WRITE_INTERVAL = 0.5
#: The last line while the answer is not complete, per state.
STATE_LINES = {
    "generating": "_[StarChat is still writing; this file is updated as the answer streams]_",
    "stopped": "_[stopped]_",
    "failed": "_[failed: {reason}]_",
}


def transcripts_dir() -> Path:
    """Where the conversation files live (created private on first use)."""
    return data_dir() / "conversations"


class Transcript:
    """The Markdown file of one conversation: earlier turns plus the one being answered."""

    def __init__(self, conversation_id: str, title: str, history: list[dict[str, str]],
                 question: str) -> None:
        self.path = transcripts_dir() / f"{conversation_id}.md"
        self._head = self._render_head(conversation_id, title, history, question)

    @property
    def uri(self) -> str:
        """The file's ``file://`` URI, for ``window/showDocument``."""
        return self.path.as_uri()

    @property
    def answer_line(self) -> int:
        """0-based line of the heading above the answer being written."""
        return self._head.count("\n") - 2

    @staticmethod
    def _render_head(conversation_id: str, title: str, history: list[dict[str, str]],
                     question: str) -> str:
        lines = [f"# {title}", "", f"_Conversation {conversation_id}_", ""]
        for message in history:
            heading = "## You" if message["role"] == "user" else "## StarChat"
            lines += [heading, "", message["content"].rstrip(), ""]
        lines += ["## You", "", question.rstrip(), "", "## StarChat", "", ""]
        return "\n".join(lines)

    def render(self, reply: str, state: str = "done", reason: str = "") -> str:
        """The whole file for this reply; ``state`` is done, generating, stopped or failed."""
        text = self._head + reply.rstrip() + "\n"
        if state != "done":
            text += "\n" + STATE_LINES[state].format(reason=reason) + "\n"
        return text

    def write(self, reply: str, state: str = "done", reason: str = "") -> None:
        """Replace the file atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(self.render(reply, state, reason), encoding="utf-8")
        os.replace(tmp, self.path)
