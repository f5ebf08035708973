"""Conversation commands: new, list, delete, export (ChatML JSONL for training/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import commands
from ..arguments import invalid, required_str
from .generation import system_prompt


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


def export_conversations(server: Any, args: dict[str, Any]) -> dict:
    """``starchat.exportConversations {path}`` -> ``{path, conversations}`` (JSONL rows)."""
    raw = required_str(args, "path", commands.EXPORT_CONVERSATIONS)
    path = Path(os.path.expanduser(raw))
    if not path.is_absolute():
        root = server.workspace.root_path
        if root is None:
            raise invalid(f"{commands.EXPORT_CONVERSATIONS}: path must be absolute (no workspace).")
        path = Path(root) / path
    if path.is_dir():
        raise invalid(f"{commands.EXPORT_CONVERSATIONS}: {path} is a directory, not a file.")
    try:
        count = server.store.export_jsonl(path, system_prompt())
    except OSError as exc:
        raise invalid(f"{commands.EXPORT_CONVERSATIONS}: cannot write {path}: {exc.strerror}.") from exc
    return {"path": str(path), "conversations": count}


HANDLERS = {
    commands.NEW_CONVERSATION: new_conversation,
    commands.LIST_CONVERSATIONS: list_conversations,
    commands.DELETE_CONVERSATION: delete_conversation,
    commands.EXPORT_CONVERSATIONS: export_conversations,
}
