"""The feedback log, server side: what the user kept of the model's work, written as training rows.

Only while the setting ``feedback.enabled`` is on (off by default), and only to the user's
data dir (``model.runtime.feedback_log`` has the file layout and the row format):

- an accepted inline completion: LSP 3.18 has no accept notification, so while the log is on
  each ``InlineCompletionItem`` carries the command ``starchat.acceptCompletion {id}``, which
  editors execute when the user accepts the item (VS Code runs ``item.command`` itself,
  Neovim 0.12's ``vim.lsp.inline_completion`` too, and our Neovim plugin on 0.11). The server
  keeps the last :data:`KEEP_SUGGESTIONS` suggestions by id and writes the row when the
  command comes;
- a Fix or Add docstring answer the editor applied (``workspace/applyEdit`` answered
  ``applied: true``), and every completed turn of a conversation (chat, explain, write tests):
  the dialogue as the model saw it, the reply last.

Rows are written by one background thread, so a slow disk never blocks the event loop, in
the order they came. A log at its size cap (``feedback.maxMegabytes``) takes no more rows:
one warning says so. ``starchat.clearFeedback {workspace?}`` deletes the log of the
workspace (default: every workspace folder of this server); ``starchat feedback`` shows
and deletes logs from the command line.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.uris import to_fs_path

from model.runtime import feedback_log

from .. import commands
from ..arguments import invalid, optional_str, required_str
from ..context import flatten

log = logging.getLogger(__name__)

KEEP_SUGGESTIONS = 64  # an invoked request alone shows up to 8
CLOSE_TIMEOUT = 5.0  # seconds shutdown waits for rows still being written


class FeedbackLog:
    """The server's feedback log: suggestions waiting for their accept, rows being written."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.suggestions: OrderedDict[str, dict] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: set[asyncio.Future] = set()
        self._full: set[Path] = set()  # logs at their cap (warned once)

    @property
    def enabled(self) -> bool:
        return self.server.settings.feedback.enabled

    def _roots(self) -> list[str]:
        workspace = self.server.workspace
        roots = [to_fs_path(folder.uri) for folder in workspace.folders.values()]
        if workspace.root_path:
            roots.append(workspace.root_path)
        return [root for root in roots if root]

    def workspace_for(self, uri: str | None) -> str | None:
        """The root a document belongs to (the innermost workspace folder holding it); for no
        document, or one that is not a file, the first root; None outside every root."""
        roots = self._roots()
        path = to_fs_path(uri) if uri else None
        if path is None:
            return roots[0] if roots else None
        inside = [root for root in roots if Path(path).is_relative_to(root)]
        return max(inside, key=len) if inside else None

    # Inline completions -------------------------------------------------------------------

    def suggest(self, uri: str, path: str, prefix: str, suffix: str, text: str) -> types.Command | None:
        """The command an inline completion item carries while the log is on (None when off)."""
        if not self.enabled:
            return None
        root = self.workspace_for(uri)
        if root is None or not text:
            return None
        suggestion_id = uuid.uuid4().hex
        self.suggestions[suggestion_id] = {
            "kind": "completion", "workspace": root, "path": path,
            "prefix": feedback_log.cap_prefix(prefix), "suffix": feedback_log.cap_suffix(suffix),
            "completion": text,
        }
        while len(self.suggestions) > KEEP_SUGGESTIONS:
            self.suggestions.popitem(last=False)
        return types.Command(title="StarChat: suggestion accepted", command=commands.ACCEPT_COMPLETION,
                             arguments=[{"id": suggestion_id}])

    def accepted(self, args: dict[str, Any]) -> dict:
        """``starchat.acceptCompletion {id}``: log the suggestion (an unknown id is no error:
        the editor runs this by itself, and the suggestion may be long forgotten)."""
        suggestion_id = required_str(args, "id", commands.ACCEPT_COMPLETION)
        row = self.suggestions.pop(suggestion_id, None)
        if row is None or not self.enabled:
            return {"logged": False}
        self.write(row)
        return {"logged": True}

    # Generating commands ------------------------------------------------------------------

    def turn(self, job: Any, reply: str, outcome: dict, result: dict) -> None:
        """After a generating command: log an applied edit or a completed conversation turn.
        Never fails the command (the edit is applied by now): a failure here is only logged."""
        if not self.enabled or outcome.get("cancelled") or not reply:
            return
        try:
            self._turn(job, reply, result)
        except Exception:
            log.error("could not log the feedback of %s", job.command, exc_info=True)

    def _turn(self, job: Any, reply: str, result: dict) -> None:
        editing = job.task in feedback_log.EDIT_COMMANDS
        if editing and result.get("applied") is not True:
            return
        root = self.workspace_for(job.target.document.uri if job.target else None)
        if root is None:
            return
        messages = [{"role": "system", "content": job.request["system"]}] if job.request.get("system") else []
        messages += [*job.history, {"role": "user", "content": flatten(job.parts)},
                     {"role": "assistant", "content": reply}]
        row: dict[str, Any] = {"kind": "edit" if editing else "chat", "workspace": root,
                               "command": job.task, "messages": messages}
        if not editing:
            row["conversation"] = job.conversation_id
        self.write(row)

    # Writing ------------------------------------------------------------------------------

    def write(self, row: dict) -> None:
        """Append ``row`` (plus the time) in the background."""
        row = {**row, "time": time.time()}
        cap = self.server.settings.feedback.max_megabytes * 2**20
        future = self._submit(_append, row, cap)
        future.add_done_callback(lambda f: self._written(f, row["workspace"]))

    def _submit(self, fn: Any, *args: Any) -> asyncio.Future:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="starchat-feedback")
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    def _written(self, future: asyncio.Future, workspace: str) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.warning("could not write to the feedback log of %s: %s", workspace, error)
            return
        path, written = future.result()
        if not written and path not in self._full:
            self._full.add(path)
            message = (f"The StarChat feedback log {path} reached its size cap "
                       f"({self.server.settings.feedback.max_megabytes} MB): nothing more is logged. "
                       "See it with `starchat feedback show`, delete it with `starchat feedback clear`.")
            log.warning("%s", message)
            self.server.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=message))

    async def clear(self, args: dict[str, Any]) -> dict:
        """``starchat.clearFeedback {workspace?}`` -> ``{deleted: [{path, bytes}]}``."""
        name = commands.CLEAR_FEEDBACK
        given = optional_str(args, "workspace", name)
        if given is not None and ("\0" in given or not Path(given).is_absolute()):
            raise invalid(f"{name}: workspace must be an absolute path of a folder.")
        roots = [given] if given is not None else self._roots()
        if not roots:
            raise invalid(f"{name}: there is no workspace; name one as workspace.")
        self.suggestions.clear()
        deleted = await self._submit(_delete, roots)  # after the rows queued before it
        self._full.difference_update(path for path, _ in deleted)
        return {"deleted": [{"path": str(p), "bytes": size} for p, size in deleted]}

    async def close(self) -> None:
        """Wait (a little) for the rows still being written, then stop the writer."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=CLOSE_TIMEOUT)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


def _append(row: dict, cap: int) -> tuple[Path, bool]:
    """(In the writer thread: even resolving the root's real path touches the disk.)"""
    row["workspace"] = feedback_log.workspace_key(row["workspace"])
    path = feedback_log.log_path(row["workspace"])
    return path, feedback_log.append_row(path, row, cap)


def _delete(roots: list[str]) -> list[tuple[Path, int]]:
    return feedback_log.delete_logs(list(dict.fromkeys(feedback_log.log_path(root) for root in roots)))


async def accept_completion(server: Any, args: dict[str, Any]) -> dict:
    return server.feedback.accepted(args)


async def clear_feedback(server: Any, args: dict[str, Any]) -> dict:
    return await server.feedback.clear(args)


HANDLERS = {
    commands.ACCEPT_COMPLETION: accept_completion,
    commands.CLEAR_FEEDBACK: clear_feedback,
}
