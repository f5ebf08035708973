"""Conversation commands: new, list, delete, export (ChatML JSONL for training/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import commands
from ..arguments import invalid, required_str
from .jobs import system_prompt


def new_conversation(server: Any, args: dict[str, Any]) -> dict:
    """``starchat.newConversation {title?}`` -> ``{conversationId}``."""
    title = args.get("title") or ""
    if not isinstance(title, str):
        raise invalid(f"{commands.NEW_CONVERSATION}: title must be a string.")
    return {"conversationId": server.store.create(title)}


def list_conversations(server: Any, args: dict[str, Any]) -> dict:
    """``starchat.listConversations`` -> ``{conversations: [...]}``, newest first."""
    return {"conversations": server.store.list()}


def delete_conversation(server: Any, args: dict[str, Any]) -> dict:
    """``starchat.deleteConversation {conversationId}`` -> ``{deleted: true}``."""
    conversation_id = required_str(args, "conversationId", commands.DELETE_CONVERSATION)
    if not server.store.exists(conversation_id):
        raise invalid(f"Unknown conversation {conversation_id}; nothing was deleted.")
    server.store.delete(conversation_id)
    return {"conversationId": conversation_id, "deleted": True}


#: Longer paths are refused with a sentence before the file system is asked (Linux PATH_MAX).
MAX_PATH_CHARS = 4096


def export_conversations(server: Any, args: dict[str, Any]) -> dict:
    """``starchat.exportConversations {path}`` -> ``{path, conversations}`` (JSONL rows).

    A relative path is taken from the workspace root and must stay inside it once ``..``
    and symlinks are resolved; an absolute path (or ``~/...``) is the user's explicit choice
    on stdio (their own editor), and must lead inside the workspace for a TCP client (anyone
    who knows the token, maybe on another machine: ``lsp_server.tcp``).
    """
    name = commands.EXPORT_CONVERSATIONS
    raw = required_str(args, "path", name)
    if "\0" in raw:
        raise invalid(f"{name}: path contains a NUL character; no file can have that name.")
    if len(raw) > MAX_PATH_CHARS:
        raise invalid(f"{name}: path has {len(raw)} characters; at most {MAX_PATH_CHARS} work.")
    path = Path(os.path.expanduser(raw))
    try:
        if not path.is_absolute() or getattr(server, "over_tcp", False):
            path = _inside_workspace(server, path, raw)
        if path.is_dir():
            raise invalid(f"{name}: {path} is a directory, not a file.")
        count = server.store.export_jsonl(path, system_prompt())
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise invalid(f"{name}: cannot write {path}: {reason}.") from exc
    return {"path": str(path), "conversations": count}


def _inside_workspace(server: Any, path: Path, raw: str) -> Path:
    """``path`` under the workspace root, resolved; refused when it leads outside."""
    name = commands.EXPORT_CONVERSATIONS
    root = server.workspace.root_path
    if root is None:
        raise invalid(f"{name}: path must be absolute (no workspace).")
    real_root = Path(root).resolve()
    target = (real_root / path).resolve()
    if not target.is_relative_to(real_root):
        if getattr(server, "over_tcp", False):
            raise invalid(f"{name}: {raw} leads outside the workspace ({real_root}); over TCP, exports "
                          "are written inside the workspace only.")
        raise invalid(
            f"{name}: {raw} leads outside the workspace ({real_root}); a relative path must "
            "stay inside it, give an absolute path to write elsewhere."
        )
    return target


HANDLERS = {
    commands.NEW_CONVERSATION: new_conversation,
    commands.LIST_CONVERSATIONS: list_conversations,
    commands.DELETE_CONVERSATION: delete_conversation,
    commands.EXPORT_CONVERSATIONS: export_conversations,
}
