"""Dialogue data: loading, validation and the OpenAssistant tree converter.

A dialogue row is ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``,
the format the language server exports, so exported conversations train without conversion.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
# OpenAssistant calls the user "prompter".
OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


class DialogueError(ValueError):
    """A dialogue row that cannot be trained on; the message names the row and the reason."""


def validate_dialogue(row: Any, where: str = "row") -> list[dict]:
    """Check one row and return its messages as plain ``{"role", "content"}`` dicts.

    Raises DialogueError with a one-sentence reason naming ``where`` (e.g. "line 12").
    """
    if not isinstance(row, dict) or "messages" not in row:
        raise DialogueError(f"{where}: missing 'messages' (expected {{'messages': [...]}}).")
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise DialogueError(f"{where}: 'messages' must be a non-empty list.")
    clean: list[dict] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DialogueError(f"{where}: message {i} is not an object with 'role' and 'content'.")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DialogueError(
                f"{where}: message {i} has unknown role {role!r} (expected one of {', '.join(ROLES)})."
            )
        if role == "system" and i != 0:
            raise DialogueError(f"{where}: message {i} is a system turn; only the first may be.")
        if not isinstance(content, str) or not content.strip():
            raise DialogueError(f"{where}: message {i} ({role}) has empty content.")
        if clean and clean[-1]["role"] == role:
            raise DialogueError(f"{where}: messages {i - 1} and {i} are both {role} turns in a row.")
        clean.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in clean):
        raise DialogueError(f"{where}: no assistant turn, so nothing to learn from.")
    return clean


def _read_rows(path: Path) -> Iterable[tuple[str, Any]]:
    """Yield (location, row) pairs from a JSONL, JSON or Parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"{path.name} line {number}", json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DialogueError(f"{path.name} line {number}: not valid JSON ({exc.msg}).") from None
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DialogueError(f"{path.name}: not valid JSON ({exc.msg}, line {exc.lineno}).") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DialogueError(f"{path.name}: expected a JSON list of dialogue rows.")
        for number, row in enumerate(data):
            yield f"{path.name} row {number}", row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path.name} row {number}", row
    else:
        raise DialogueError(f"{path.name}: unsupported file type {suffix!r} (use .jsonl, .json or .parquet).")


def _hub_rows(name: str, split: str | None) -> Iterable[tuple[str, Any]]:
    """Yield rows of a Hugging Face dataset id (local cache, or the network where allowed)."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is in the train extra
        raise DialogueError(f"{name}: loading a dataset id needs the 'datasets' package.") from None
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # noqa: BLE001 - any failure here is "not available"
        raise DialogueError(f"{name}: cannot load this dataset ({type(exc).__name__}: {exc}).") from None
    for number, row in enumerate(ds):
        yield f"{name}[{split or 'train'}] row {number}", row


def load_dialogues(source: str | Path, split: str | None = None) -> list[dict]:
    """Load and validate dialogues from a file or directory, or a HF dataset id.

    A directory holds ``{split}.jsonl|json|parquet`` files (split defaults to "train").
    Every row is validated; the first bad one raises DialogueError naming its row and reason.
    Rows carry only ``messages``; other columns are dropped.
    """
    path = Path(source)
    if path.is_dir():
        wanted = split or "train"
        candidates = [path / f"{wanted}{ext}" for ext in (".jsonl", ".json", ".parquet")]
        found = [c for c in candidates if c.exists()]
        if not found:
            raise DialogueError(f"{path}: no {wanted}.jsonl, {wanted}.json or {wanted}.parquet inside.")
        rows = _read_rows(found[0])
    elif path.exists():
        rows = _read_rows(path)
    elif path.suffix.lower() in (".jsonl", ".json", ".parquet") or str(source).startswith((".", "/")):
        raise DialogueError(f"{source}: no such file.")
    else:
        rows = _hub_rows(str(source), split)
    dialogues = [{"messages": validate_dialogue(row, where)} for where, row in rows]
    if not dialogues:
        raise DialogueError(f"{source}: no dialogues found.")
    log.info("loaded %d dialogues from %s", len(dialogues), source)
    return dialogues


def _oasst_role(row: dict) -> str | None:
    """The chat role of an OpenAssistant message ("user"/"assistant"), None for any other role."""
    name = row.get("role")
    return OASST_ROLES.get(name) if isinstance(name, str) else None


def oasst_trees_to_dialogues(rows: Iterable[dict], lang: str | None = "en") -> list[dict]:
    """Turn OpenAssistant message rows into linear dialogues, one per conversation tree.

    Rows have ``message_id``, ``parent_id`` (None for the root prompt), ``role``
    ("prompter"/"assistant"), ``text``, and optionally ``lang``, ``rank`` and ``deleted``.
    From the root we follow, at every turn, the best-ranked reply (lowest ``rank``; unranked
    replies come after ranked ones, ties keep input order) — one highest-quality dialogue
    per tree, the choice HuggingFaceH4/oasst1_en made, rather than every path, which would
    repeat the shared prefix many times. The dialogue is cut after its last assistant turn.
    ``lang`` keeps only trees whose root prompt is in that language (None keeps all);
    deleted messages and their subtrees are skipped.
    """
    by_id: dict[str, dict] = {}
    children: dict[str, list[dict]] = defaultdict(list)
    roots: list[dict] = []
    for row in rows:
        if row.get("deleted"):
            continue
        by_id[row["message_id"]] = row
        if row.get("parent_id") is None:
            roots.append(row)
        else:
            children[row["parent_id"]].append(row)

    def rank_key(item: tuple[int, dict]) -> tuple[int, float, int]:
        order, row = item
        rank = row.get("rank")
        return (rank is None, rank if rank is not None else 0.0, order)

    dialogues = []
    for root in roots:
        if lang is not None and root.get("lang") != lang:
            continue
        path: list[dict[str, str]] = []
        node: dict | None = root
        while node is not None:
            role = _oasst_role(node)
            text = node.get("text") or ""
            if role is None or not text.strip():
                break
            path.append({"role": role, "content": text})
            replies = [r for r in children.get(node["message_id"], []) if _oasst_role(r)]
            # A reply of the same role as its parent would break the alternation; skip it.
            replies = [r for r in replies if _oasst_role(r) != role]
            node = min(enumerate(replies), key=rank_key)[1] if replies else None
        while path and path[-1]["role"] != "assistant":
            path.pop()
        if path:
            dialogues.append({"messages": path})
    return dialogues
