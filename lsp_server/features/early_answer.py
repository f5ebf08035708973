"""Early answers: generating commands that never hold a client which blocks on them.

eglot and lsp-mode send ``workspace/executeCommand`` as a synchronous request with a 10 s
timeout, so a command that answers only when the generation ends freezes Emacs and then
fails. For such clients a generating command answers at once with
``{conversationId, state: "started", token, document?}`` and delivers its result through
messages every client handles asynchronously:

- Fix / Add docstring: the versioned ``workspace/applyEdit``, as in the blocking mode
  (a warning ``window/showMessage`` when nothing could be applied);
- Explain / Write tests / chat: the conversation as a Markdown file (``transcript.py``),
  rewritten while the answer streams and opened with ``window/showDocument`` at the start
  and again at the end, where the client supports it; otherwise one ``window/showMessage``
  with the answer and the file's path when it is complete;
- ``$/progress`` on a token the server creates (``window/workDoneProgress/create``) where
  the client supports it; ``window/workDoneProgress/cancel`` on ``token`` (which the
  answer carries in any case) stops the generation.

Setting ``commands.answer``: ``"early"``, ``"wait"`` (the whole result as the answer,
with streamed deltas: our Neovim and VS Code clients) or ``"auto"`` (the default: early
for Emacs clients, recognised by ``clientInfo.name``, or, where the client sends no
``clientInfo`` as eglot 1.9 does, by the name of its ``processId``'s process).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from pathlib import Path
from typing import Any

from lsprotocol import types

from ..transcript import WRITE_INTERVAL, Transcript
from .jobs import EDITING_TASKS, Job, finish, forget_if_new, stream_reply
from .progress import DeltaStream, client_supports_progress

log = logging.getLogger(__name__)

#: ``clientInfo.name`` of clients that block on executeCommand (eglot, lsp-mode = "emacs").
BLOCKING_CLIENTS = re.compile(r"eglot|lsp-mode|emacs", re.IGNORECASE)
#: Seconds we wait for the client to open a document before going on without it.
SHOW_TIMEOUT = 10.0
#: Seconds between the early answer and the first message of its delivery.
ANSWER_GAP = 0.2


def answers_early(server: Any) -> bool:
    """Whether generating commands answer at once for this client (setting, then client)."""
    mode = server.settings.commands.answer
    if mode != "auto":
        return mode == "early"
    info = getattr(server, "client_info", None)
    if info is not None and info.name:
        return bool(BLOCKING_CLIENTS.search(info.name))
    return process_name(getattr(server, "process_id", None)).startswith("emacs")


def process_name(pid: Any) -> str:
    """The command name of a local process (Linux ``/proc``), or "" when unknown."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return ""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def start(server: Any, job: Job) -> dict:
    """Start delivering ``job`` in the background and return the early answer."""
    token = f"starchat-{uuid.uuid4().hex}"
    transcript = None
    if job.task not in EDITING_TASKS:
        transcript = Transcript(job.conversation_id, job.title, job.history, _question(job))
        transcript.write("", "generating")
    task = asyncio.get_running_loop().create_task(_deliver(server, job, token, transcript))
    server.cancel_on_token[token] = task
    server.keep_task(task)
    answer: dict[str, Any] = {
        "conversationId": job.conversation_id,
        "state": "started",
        "token": token,
    }
    if transcript is not None:
        answer["document"] = transcript.uri
    return answer


def _question(job: Job) -> str:
    from ..context import flatten  # noqa: PLC0415 - light, local to the one use

    return flatten(job.parts)


async def _deliver(server: Any, job: Job, token: str, transcript: Transcript | None) -> None:
    """Stream the answer, then store it and deliver it (edit, document or message)."""
    try:
        await _stream_and_deliver(server, job, token, transcript)
    except asyncio.CancelledError:
        # Cancelled outside the generation loop (creating the token, applying the edit).
        if transcript is not None:
            transcript.write("", "stopped")
        raise
    finally:
        server.cancel_on_token.pop(token, None)


async def _stream_and_deliver(
    server: Any, job: Job, token: str, transcript: Transcript | None
) -> None:
    # Let the early answer reach the client on its own: Emacs 28's jsonrpc leaves a
    # message that comes in the same read as the reply it waits for unprocessed until
    # more output arrives (measured: a showDocument right behind it waited 10 s).
    await asyncio.sleep(ANSWER_GAP)
    stream = DeltaStream(server, await _progress_token(server, token), job.title)
    writer = None
    if transcript is not None and not await _show(server, transcript):
        _tell(server, types.MessageType.Info,
              f"{job.title}: answering in the background; the answer comes here when it is "
              f"complete, and is written to {transcript.path} meanwhile.")
    elif transcript is None and stream.token is None:
        _tell(server, types.MessageType.Info,
              f"{job.title}: answering in the background; the edit comes when it is complete.")
    if transcript is not None:
        writer = asyncio.get_running_loop().create_task(_keep_writing(transcript, stream))
    try:
        outcome = await stream_reply(server, stream, job.request)
    except Exception as exc:
        forget_if_new(server, job)
        reason = getattr(exc, "message", None) or str(exc)
        if transcript is not None:
            transcript.write(stream.sent, "failed", reason)
        _tell(server, types.MessageType.Error, f"{job.title} failed: {reason}")
        return
    finally:
        if writer is not None:
            writer.cancel()
    result = await finish(server, job, stream.sent, outcome)
    if transcript is not None:
        transcript.write(stream.sent, "stopped" if outcome["cancelled"] else "done")
        if not await _show(server, transcript) and not outcome["cancelled"]:
            _tell(server, types.MessageType.Info,
                  f"{job.title} (also in {transcript.path}):\n\n{stream.sent}")
    elif result.get("applied") is False and not outcome["cancelled"]:
        _tell(server, types.MessageType.Warning, f"{job.title}: {result['message']}")


async def _progress_token(server: Any, token: str) -> str | None:
    """Create ``token`` on the client when it supports progress; None otherwise."""
    if not client_supports_progress(server):
        return None
    try:
        await server.work_done_progress.create_async(token)
    except Exception as exc:  # the client may refuse; it still can cancel by the token
        log.warning("window/workDoneProgress/create failed: %s", exc)
        return None
    return token


def supports_show_document(server: Any) -> bool:
    """Whether the client declared ``window.showDocument.support``."""
    window = getattr(server.client_capabilities, "window", None)
    show = getattr(window, "show_document", None) if window else None
    return bool(show and show.support)


async def _show(server: Any, transcript: Transcript) -> bool:
    """Ask the client to show the file (without taking the focus); True if it did."""
    if not supports_show_document(server):
        return False
    line = types.Position(line=transcript.answer_line, character=0)
    params = types.ShowDocumentParams(
        uri=transcript.uri, take_focus=False, selection=types.Range(start=line, end=line)
    )
    try:
        # shield: a late reply must still find its future (pygls fails on a cancelled one).
        answer = await asyncio.wait_for(
            asyncio.shield(server.window_show_document_async(params)), SHOW_TIMEOUT
        )
    except Exception as exc:  # a client that fails here still gets the message fallback
        log.warning("window/showDocument failed: %s", exc)
        return False
    return bool(answer and answer.success)


async def _keep_writing(transcript: Transcript, stream: DeltaStream) -> None:
    """Rewrite the file every WRITE_INTERVAL while new text arrives."""
    written = None
    while True:
        await asyncio.sleep(WRITE_INTERVAL)
        if stream.sent != written:
            written = stream.sent
            transcript.write(written, "generating")


def _tell(server: Any, kind: types.MessageType, message: str) -> None:
    server.window_show_message(types.ShowMessageParams(type=kind, message=message))
