"""Streaming text to the editor as ``$/progress`` deltas, coalesced to ~20 reports a second.

A report's ``message`` is the text generated since the previous report, so concatenating
all report messages gives exactly the final reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from lsprotocol import types

log = logging.getLogger(__name__)

#: Minimum seconds between two reports (at most ~20 per second).
REPORT_INTERVAL = 0.05


def client_supports_progress(server: Any) -> bool:
    """Whether the client accepts server-created progress tokens."""
    window = getattr(server.client_capabilities, "window", None)
    return bool(window and window.work_done_progress)


async def make_token(server: Any, offered: types.ProgressToken | None) -> Any:
    """The client's ``workDoneToken`` if it sent one, else a token we create (or None)."""
    if offered is not None:
        return offered
    if not client_supports_progress(server):
        return None
    token = f"starchat-{uuid.uuid4().hex}"
    try:
        await server.work_done_progress.create_async(token)
    except Exception as exc:  # the client may refuse; we stream nothing then
        log.warning("window/workDoneProgress/create failed: %s", exc)
        return None
    return token


class DeltaStream:
    """begin / coalesced reports / end on one progress token (a no-op without a token)."""

    def __init__(self, server: Any, token: Any, title: str) -> None:
        self._server = server
        self.token = token
        self._title = title
        self._pending: list[str] = []
        self._last_report = 0.0
        self._flush_handle: asyncio.TimerHandle | None = None
        self.reports = 0
        self.sent = ""

    def begin(self, message: str | None = None) -> None:
        """Send ``begin`` (cancellable)."""
        if self.token is None:
            return
        self._server.work_done_progress.begin(
            self.token,
            types.WorkDoneProgressBegin(title=self._title, message=message, cancellable=True),
        )

    def delta(self, text: str) -> None:
        """Queue generated text; send it now or within REPORT_INTERVAL."""
        if not text:
            return
        self._pending.append(text)
        now = time.monotonic()
        if now - self._last_report >= REPORT_INTERVAL:
            self.flush()
        elif self._flush_handle is None:
            delay = REPORT_INTERVAL - (now - self._last_report)
            self._flush_handle = asyncio.get_running_loop().call_later(delay, self.flush)

    def flush(self) -> None:
        """Send everything queued as one report."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self.sent += text
        self._last_report = time.monotonic()
        if self.token is None:
            return
        self.reports += 1
        self._server.work_done_progress.report(
            self.token, types.WorkDoneProgressReport(message=text)
        )

    def end(self, message: str) -> None:
        """Flush and send ``end``; forget the token."""
        self.flush()
        if self.token is None:
            return
        self._server.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
        # pygls keeps a future per token forever; drop ours.
        self._server.work_done_progress.tokens.pop(self.token, None)
