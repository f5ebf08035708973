"""A generating command as a job: check its arguments and build the request (:func:`prepare`),
stream the worker's deltas as ``$/progress`` reports (:func:`stream_reply`), store the
completed turn and apply an edit (:func:`finish`).

Both answer modes run these steps: ``generation`` (the whole result as the answer) and
``early_answer`` (an answer at once, the result delivered in the background, for clients
that block on commands). Cancellation (``$/cancelRequest`` or
``window/workDoneProgress/cancel``) cancels the task that streams; :func:`stream_reply`
catches that, stops the worker's generation and returns the partial reply marked
``cancelled``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError

from .. import commands
from ..arguments import (
    DocumentRange,
    document_range,
    invalid,
    optional_str,
    parse_diagnostics,
    required_str,
)
from ..config import generation_params
from ..context import build_request, build_user_parts, flatten
from ..extract import extract_code, fit_to_selection, parses
from .model_link import ModelUnavailable
from .progress import DeltaStream

log = logging.getLogger(__name__)

TASKS = {
    commands.EXPLAIN: "explain",
    commands.FIX: "fix",
    commands.CHAT: "chat",
    commands.WRITE_TESTS: "writeTests",
    commands.ADD_DOCSTRING: "addDocstring",
}
#: Tasks whose answer replaces the selection.
EDITING_TASKS = {"fix", "addDocstring"}


def system_prompt() -> str:
    """The model layer's coding-assistant persona (defined once, in model.prompt.chat_format)."""
    from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT  # noqa: PLC0415 - cheap, but not needed at start

    return DEFAULT_SYSTEM_PROMPT


@dataclass
class Job:
    """A checked generating command, ready to stream: what both answer modes share."""

    command: str
    task: str
    title: str
    message: str | None
    target: DocumentRange | None
    parts: list[dict[str, str]]
    history: list[dict[str, str]]
    request: dict[str, Any]
    conversation_id: str
    is_new: bool


def prepare(server: Any, command: str, args: dict[str, Any]) -> Job:
    """Check the arguments and build the request; bad input raises an LSP error here."""
    task = TASKS[command]
    settings = server.settings
    surrounding = (
        settings.context.edit_surrounding_lines
        if task in EDITING_TASKS
        else settings.context.surrounding_lines
    )
    message: str | None
    if task == "chat":
        message = required_str(args, "message", command)
        target = document_range(server.workspace, args, command, surrounding, required=False)
    else:
        message = optional_str(args, "message", command)
        target = document_range(server.workspace, args, command, surrounding, required=True)
    diagnostics = parse_diagnostics(args.get("diagnostics"), command)
    conversation_id = optional_str(args, "conversationId", command)
    store = server.store
    if conversation_id is not None and not store.exists(conversation_id):
        raise invalid(f"Unknown conversation {conversation_id}; it may have been deleted.")
    history = store.messages(conversation_id) if conversation_id else []

    parts = build_user_parts(
        task,
        target.selection if target else None,
        message=message,
        diagnostics=diagnostics,
        max_diagnostics=settings.context.max_diagnostics,
    )
    request = build_request(system_prompt(), history, parts, generation_params(settings))
    is_new = conversation_id is None
    if conversation_id is None:
        conversation_id = store.create()
    title = commands.ACTION_TITLES.get(command, "StarChat: Chat")
    return Job(command, task, title, message, target, parts, history, request,
               conversation_id, is_new)


def forget_if_new(server: Any, job: Job) -> None:
    """Nothing was said in a new conversation: don't leave it behind."""
    if job.is_new and server.store.exists(job.conversation_id):
        server.store.delete(job.conversation_id)


async def finish(server: Any, job: Job, reply: str, outcome: dict) -> dict:
    """Store the completed turn, apply an edit, and build the result object."""
    result: dict[str, Any] = {"conversationId": job.conversation_id, "reply": reply}
    if outcome["truncated"]:
        result["truncated"] = outcome["truncated"]
    if outcome["cancelled"]:
        result["cancelled"] = True
    else:
        first_line = job.message or flatten(job.parts).splitlines()[-1]
        server.store.add_turn(job.conversation_id, flatten(job.parts), reply, title=first_line)
    if job.task in EDITING_TASKS:
        assert job.target is not None
        if outcome["cancelled"]:
            result.update(applied=False, message="Cancelled; nothing was applied.")
        else:
            result.update(await apply_code(server, job.target, reply, job.title))
    server.feedback.turn(job, reply, outcome, result)  # logs only when the user turned it on
    return result


async def stream_reply(server: Any, stream: DeltaStream, request: dict) -> dict:
    """Send the request, stream deltas, and handle cancellation and a dead worker."""
    request_id = uuid.uuid4().hex
    current = asyncio.current_task()
    if stream.token is not None:
        server.cancel_on_token[stream.token] = current
    link = server.link
    stream.begin(None if link.ready else "Waiting for the model to load")
    outcome: dict[str, Any] = {"truncated": [], "cancelled": False}
    client = None
    end_message = "Done"
    try:
        client = await link.client()
        async for event in client.generate(request, request_id=request_id):
            kind = event.get("type")
            if kind == "delta":
                stream.delta(event.get("text", ""))
            elif kind == "done":
                outcome["truncated"] = list(event.get("truncated") or [])
                outcome["finish_reason"] = event.get("finish_reason")
            elif kind == "error":
                raise invalid(f"The model refused the request: {event.get('message')}")
    except asyncio.CancelledError:
        # Ours to handle: answer with the partial reply instead of dying.
        if current is not None:
            current.uncancel()
        outcome["cancelled"] = True
        end_message = "Cancelled"
        if client is not None:
            await _cancel_quietly(client, request_id)
    except ModelUnavailable as exc:
        end_message = "Failed"
        raise JsonRpcInternalError(message=str(exc)) from exc
    except Exception as exc:
        if not _is_worker_error(exc):
            raise
        end_message = "Failed"
        message = f"The StarChat model worker stopped: {exc}"
        server.window_show_message(
            types.ShowMessageParams(type=types.MessageType.Error, message=message)
        )
        link.reset()
        raise JsonRpcInternalError(message=message) from exc
    finally:
        stream.end(end_message)
        if stream.token is not None:
            server.cancel_on_token.pop(stream.token, None)
    return outcome


def _is_worker_error(exc: Exception) -> bool:
    from model.serving.client import WorkerError  # noqa: PLC0415 - loaded by now, kept off start-up

    return isinstance(exc, WorkerError)


async def _cancel_quietly(client: Any, request_id: str) -> None:
    try:
        await asyncio.wait_for(client.cancel(request_id), timeout=2)
    except Exception as exc:  # the worker may already have finished the request
        log.debug("cancel %s: %s", request_id, exc)


async def apply_code(server: Any, target: DocumentRange, reply: str, label: str) -> dict:
    """Replace the range with the answer's code block, versioned against the document."""
    language = target.selection.language_id
    code = extract_code(reply, language)
    if code is None:
        return {"applied": False, "message": "The answer has no code block; nothing was applied."}
    if not parses(code, language):
        return {"applied": False, "message": "The answer's code does not parse; nothing was applied."}
    document = target.document
    if document.version != target.version:
        return {
            "applied": False,
            "message": "The document changed while the model was answering; the edit was refused.",
        }
    new_text = fit_to_selection(code, target.selection.text)
    edit = types.WorkspaceEdit(
        document_changes=[
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(
                    uri=document.uri, version=target.version
                ),
                edits=[types.TextEdit(range=target.range, new_text=new_text)],
            )
        ]
    )
    response = await server.workspace_apply_edit_async(
        types.ApplyWorkspaceEditParams(edit=edit, label=label)
    )
    if response.applied:
        return {"applied": True}
    reason = response.failure_reason or "the editor refused the edit"
    return {"applied": False, "message": f"The edit was not applied: {reason}."}
