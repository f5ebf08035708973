"""The editor's feedback log: what the user kept of the model's work, as training rows.

Written by the language server (``lsp_server.feedback``) only while the user's setting
``starchat.feedback.enabled`` is on (off by default); read by ``starchat feedback`` (see,
delete) and by ``training.feedback`` (``starchat adapt --feedback``). It lives here because
both sides may import ``model`` and neither may import the other. Local only: nothing here
or in its callers sends it anywhere.

One JSONL file per workspace, ``data_dir()/feedback/<folder name>-<key>.jsonl``, where the
key is the first 16 hex digits of the SHA-256 of the workspace root's real path; each row
records that root too (``workspace``). Rows, one JSON object a line:

- ``{"kind": "completion", "workspace", "path", "prefix", "suffix", "completion", "time"}``:
  an inline completion the user accepted (``path`` as the model saw it, relative to the
  root; ``prefix`` at most :data:`MAX_PREFIX_CHARS` (its end), ``suffix`` at most
  :data:`MAX_SUFFIX_CHARS` (its start); ``completion`` the accepted text);
- ``{"kind": "edit", "workspace", "command", "messages", "time"}``: a Fix (``"fix"``) or
  Add docstring (``"addDocstring"``) edit the editor applied; ``messages`` the dialogue as
  the model saw it (system, earlier turns, the user turn) and the reply last;
- ``{"kind": "chat", "workspace", "command", "conversation", "messages", "time"}``: a completed
  turn of a conversation (chat, explain, write tests), the whole dialogue so far; rows of one
  ``conversation`` grow, so training keeps its last.

Each row is one ``write(2)`` of a whole line to a file opened ``O_APPEND`` (mode 0600); a
file whose last line was torn (a crash, a full disk) gets a newline first, so the torn
piece stays a bad line of its own, which the reader skips and reports. A row that would take
the file past its size cap is not written (:func:`append_row` says so).
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .paths import data_dir

log = logging.getLogger(__name__)

KINDS = ("completion", "edit", "chat")
EDIT_COMMANDS = ("fix", "addDocstring")
ROLES = ("system", "user", "assistant")
MAX_PREFIX_CHARS = 8192
MAX_SUFFIX_CHARS = 4096
DEFAULT_MAX_MEGABYTES = 20
SUFFIX = ".jsonl"


def feedback_dir() -> Path:
    """The folder of the feedback logs (created private by the first row)."""
    return data_dir() / "feedback"


def workspace_key(root: str | Path) -> str:
    """The workspace as rows record it: the root's real path (symlinks resolved)."""
    return os.path.realpath(os.path.expanduser(str(root)))


def log_path(root: str | Path) -> Path:
    """The log file of the workspace at ``root`` (which need not exist)."""
    key = workspace_key(root)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(key))[:40].strip("._") or "root"
    digest = hashlib.sha256(os.fsencode(key)).hexdigest()[:16]
    return feedback_dir() / f"{name}-{digest}{SUFFIX}"


def log_files() -> list[Path]:
    """Every workspace's log file, by name."""
    folder = feedback_dir()
    return sorted(folder.glob("*" + SUFFIX)) if folder.is_dir() else []


def cap_prefix(text: str) -> str:
    """The end of the text before the cursor, at most :data:`MAX_PREFIX_CHARS`."""
    return text[-MAX_PREFIX_CHARS:] if len(text) > MAX_PREFIX_CHARS else text


def cap_suffix(text: str) -> str:
    """The start of the text after the cursor, at most :data:`MAX_SUFFIX_CHARS`."""
    return text[:MAX_SUFFIX_CHARS]


def append_row(path: Path, row: dict, max_bytes: int) -> bool:
    """Append ``row`` to ``path`` as one whole line; False (nothing written) when the file
    would grow past ``max_bytes``. OSError (a full disk, no permission) goes to the caller."""
    problem = check_row(row)
    if problem:
        raise ValueError(f"not a feedback row: {problem}")
    data = (json.dumps(row, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077:  # made by someone else, or chmod'ed: the log is the user's alone
            os.fchmod(fd, 0o600)
        if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
            data = b"\n" + data  # the last line was torn: keep it a (bad) line of its own
        if st.st_size + len(data) > max_bytes:
            return False
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return True


def delete_logs(paths: list[Path]) -> list[tuple[Path, int]]:
    """Delete the log files that exist among ``paths``; returns (path, bytes) of each deleted."""
    deleted = []
    for path in paths:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        deleted.append((path, size))
    return deleted


def _messages_problem(messages: Any) -> str | None:
    if not isinstance(messages, list) or len(messages) < 2:
        return "messages must be a list of at least two messages"
    for m in messages:
        if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            return "each message must be {role: system|user|assistant, content: string}"
    if messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's"
    return None


_TEXT_FIELDS = {"completion": ("path", "prefix", "suffix", "completion"), "edit": ("command",),
                "chat": ("command", "conversation")}


def check_row(row: Any) -> str | None:
    """Why ``row`` is not a feedback row, or None when it is one."""
    if not isinstance(row, dict):
        return "a row must be a JSON object"
    kind = row.get("kind")
    if kind not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}"
    if not isinstance(row.get("workspace"), str) or not row["workspace"]:
        return "workspace must be a path"
    time = row.get("time")
    if isinstance(time, bool) or not isinstance(time, (int, float)):
        return "time must be a number"
    for name in _TEXT_FIELDS[kind]:
        if not isinstance(row.get(name), str):
            return f"{name} must be a string"
    if kind == "completion":
        return None if row["completion"] else "completion must not be empty"
    if kind == "edit" and row["command"] not in EDIT_COMMANDS:
        return f"command must be one of {', '.join(EDIT_COMMANDS)}"
    return _messages_problem(row.get("messages"))


@dataclass
class Rows:
    """What a log file holds: its good rows (oldest first) and the lines skipped."""

    path: Path
    rows: list[dict] = field(default_factory=list)
    bad: list[int] = field(default_factory=list)  # 1-based numbers of the lines skipped
    other: int = 0  # good rows of another workspace (a file copied or renamed by hand)

    def counts(self) -> dict[str, int]:
        """Rows by kind, every kind listed."""
        found = Counter(row["kind"] for row in self.rows)
        return {kind: found[kind] for kind in KINDS}


def read_rows(path: Path, workspace: str | Path | None = None) -> Rows:
    """The rows of the log file at ``path`` (none when it does not exist); with ``workspace``,
    only that workspace's. A line that is not a whole row is skipped, and a warning says so."""
    out = Rows(path)
    want = workspace_key(workspace) if workspace is not None else None
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return out
    with handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                row = None
            if check_row(row) is not None:
                out.bad.append(number)
            elif want is not None and row["workspace"] != want:
                out.other += 1
            else:
                out.rows.append(row)
    if out.bad:
        shown = ", ".join(map(str, out.bad[:10])) + (" ..." if len(out.bad) > 10 else "")
        log.warning("%s: skipped %d line(s) that are not whole feedback rows (line %s)",
                    path, len(out.bad), shown)
    return out


def workspace_of(rows: Rows) -> str | None:
    """The workspace a log file belongs to, from its rows (None when it has none)."""
    return rows.rows[0]["workspace"] if rows.rows else None
