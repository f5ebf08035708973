"""The JSON-RPC protocol of the StarChat server: message checks, lifecycle, executeCommand.

Every body goes through :meth:`StarChatProtocol.receive`: parsed strictly and checked as a
JSON-RPC envelope (``lsp_server.jsonrpc``), then the LSP lifecycle is enforced (requests
before ``initialize`` get ServerNotInitialized, a second ``initialize`` and requests after
``shutdown`` get InvalidRequest, notifications then are dropped) before pygls handles it.
No error sent to the client carries a Python traceback; they go to the log.

pygls 2 hides the request's ``workDoneToken`` from ``@command`` handlers and runs them as
a sub-task that ``$/cancelRequest`` cannot reach, so we replace the built-in method with
an async one: the request's task *is* the command, cancelling it reaches the generation.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInternalError
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from . import commands
from .arguments import invalid, one_argument
from .features import conversations, feedback, generation
from .jsonrpc import (
    INVALID_REQUEST,
    BadMessage,
    check_envelope,
    error_response,
    parse_body,
    valid_id,
)

log = logging.getLogger(__name__)


class _Answered:
    """A message we could not structure and already answered with an error."""

    jsonrpc = None


ANSWERED = _Answered()


class StarChatProtocol(LanguageServerProtocol):
    """LanguageServerProtocol with checked input, the LSP lifecycle, a cancellable executeCommand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initialize_received = False
        #: TCP with --allow-remote: the token the first message must carry (``lsp_server.tcp``).
        self.required_token: str | None = None
        self.admitted = False
        self.disconnected = False

    def receive(self, body: bytes) -> None:
        """Handle one message body; whatever is wrong with it is answered, never raised."""
        if self.disconnected:
            return  # (what a refused client had already sent)
        if self.required_token is not None and not self.admitted:
            self._admit(body)
            return
        self._receive(body)

    def _admit(self, body: bytes) -> None:
        """The first message of a TCP client: ``initialize`` with the token, or the door."""
        from .tcp import admits

        try:
            message = parse_body(body)
            check_envelope(message)
        except BadMessage:
            message = None
        if self.required_token is not None and admits(message, self.required_token):
            self.admitted = True
            self._receive(body)
            return
        msg_id = message.get("id") if isinstance(message, dict) and valid_id(message.get("id")) else None
        log.warning("refused a TCP client: its first message was not initialize with the token")
        self._send_data(error_response(
            msg_id, INVALID_REQUEST, "Authentication required: this server listens on TCP, and the first "
            "message must be initialize with the token in initializationOptions.token.",
        ))
        self.disconnected = True
        close = getattr(self.writer, "close", None)
        if close is not None:
            close()

    def _receive(self, body: bytes) -> None:
        msg_id = message = None
        try:
            message = parse_body(body)
            check_envelope(message)
            msg_id = message.get("id") if "method" in message else None
            self._dispatch(message)
        except BadMessage as bad:
            log.warning("refused a message: %s", bad.message)
            self._send_data(bad.response())
        except JsonRpcException as exc:  # a notification or response pygls could not structure
            log.warning("dropped a message: %s", exc.message or exc)
            self._fail_waiting_request(message, exc)
        except Exception:
            # A defect of ours: the log gets the traceback, the client a sentence.
            log.error("could not handle a message", exc_info=True)
            if msg_id is not None:
                self._send_data(error_response(
                    msg_id, int(types.ErrorCodes.InternalError),
                    "The StarChat server failed on this request; its log has the details.",
                ))

    def refuse(self, bad: BadMessage) -> None:
        """Answer a message the framing refused (``read_messages``)."""
        self._send_data(bad.response())

    def _fail_waiting_request(self, message: Any, exc: JsonRpcException) -> None:
        """A malformed response to one of our requests still ends that request's wait."""
        if isinstance(message, dict) and "method" not in message:
            future = self._request_futures.pop(message.get("id"), None)  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_exception(exc)

    def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method is None:  # a response to one of our requests
            self.handle_message(self.structure_message(message))
            return
        if "id" in message:
            refusal = self._lifecycle_refusal(method)
            if refusal is not None:
                code, text = refusal
                self._send_data(error_response(message["id"], code, text))
                return
        elif method != types.EXIT and (not self.initialize_received or self._shutdown):
            log.info("dropped notification %s (%s)", method,
                     "after shutdown" if self._shutdown else "before initialize")
            return
        if "params" not in message:  # pygls' fallback types want the field
            message = {**message, "params": None}
        structured = self.structure_message(message)
        if method == types.INITIALIZE and structured is not ANSWERED:
            self.initialize_received = True
        self.handle_message(structured)

    def _lifecycle_refusal(self, method: str) -> tuple[int, str] | None:
        """The error for a request the LSP lifecycle does not allow now, else None."""
        if self._shutdown:
            return INVALID_REQUEST, f"{method}: the server is shut down; only exit is accepted."
        if method == types.INITIALIZE and self.initialize_received:
            return INVALID_REQUEST, "initialize was already received; it may be sent only once."
        if method != types.INITIALIZE and not self.initialize_received:
            return (
                int(types.ErrorCodes.ServerNotInitialized),
                f"{method}: the server is not initialized; send initialize first.",
            )
        return None

    def _send_response(self, msg_id: Any, result: Any = None, error: Any = None) -> None:
        """pygls' responses, without the traceback it puts into internal errors' data."""
        if error is not None and isinstance(error.data, dict) and "traceback" in error.data:
            error = types.ResponseError(code=error.code, message=error.message)
        super()._send_response(msg_id, result=result, error=error)

    def _send_data(self, data: Any) -> None:
        """Send strict JSON (never NaN/Infinity) with a byte-exact Content-Length."""
        if not data:
            return
        if self.writer is None:
            log.error("no transport to send on")
            return
        try:
            body = json.dumps(data, default=self._serialize_message, allow_nan=False)
        except (ValueError, TypeError):
            log.error("an outgoing message is not JSON: %.200r", data)
            msg_id = getattr(data, "id", None)
            if msg_id is None and isinstance(data, dict):
                msg_id = data.get("id")
            if msg_id is None:
                return
            body = json.dumps(error_response(
                msg_id, int(types.ErrorCodes.InternalError),
                "The answer contained a number JSON cannot carry (NaN or Infinity).",
            ))
        raw = body.encode("utf-8")  # ASCII: json.dumps escapes everything else
        if self._include_headers:
            header = (f"Content-Length: {len(raw)}\r\nContent-Type: {self.CONTENT_TYPE}; "
                      f"charset={self.CHARSET}\r\n\r\n")
            raw = header.encode("ascii") + raw
        try:
            result = self.writer.write(raw)
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)
        except BrokenPipeError:
            raise  # the client is gone: pygls' loop ends the server
        except Exception as error:
            log.error("could not send a message: %s", error)

    def structure_message(self, data: dict[str, Any]) -> Any:
        """Like pygls, but a request whose params do not fit its method gets an error reply."""
        try:
            return super().structure_message(data)
        except JsonRpcException:
            method = data.get("method")
            if "id" not in data or not isinstance(method, str):
                raise
            log.warning("request %s %s has malformed params", data.get("id"), method)
            self._send_response(
                data["id"],
                error=types.ResponseError(
                    code=types.ErrorCodes.InvalidParams,
                    message=f"The parameters of {method} do not have the shape LSP defines.",
                ),
            )
            return ANSWERED

    def handle_message(self, message: Any) -> None:
        """Skip messages already answered by :meth:`structure_message`."""
        if message is ANSWERED:
            return
        super().handle_message(message)

    @lsp_method(types.WORKSPACE_EXECUTE_COMMAND)
    async def lsp_workspace__execute_command(  # type: ignore[override]  # async on purpose
        self, params: types.ExecuteCommandParams
    ) -> Any:
        """Dispatch a StarChat command; every failure is an LSP error with a sentence."""
        server: Any = self._server
        command = params.command
        token = params.work_done_token
        if token is not None and (isinstance(token, bool) or not isinstance(token, (int, str))):
            raise invalid("workDoneToken must be an integer or a string.")
        if command not in commands.ALL_COMMANDS:
            known = ", ".join(commands.ALL_COMMANDS)
            raise invalid(f"Unknown command {command!r}; StarChat knows {known}.")
        args = one_argument(command, params.arguments)
        try:
            if command in conversations.HANDLERS:
                return conversations.HANDLERS[command](server, args)
            if command in feedback.HANDLERS:
                return await feedback.HANDLERS[command](server, args)
            return await generation.run_command(server, command, args, token)
        except (JsonRpcException, asyncio.CancelledError):
            raise
        except Exception as exc:
            # Contain it: log the traceback, answer with a sentence, keep serving.
            log.error("command %s failed", command, exc_info=True)
            raise JsonRpcInternalError(message=f"{command} failed: {exc}") from exc

    @lsp_method(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def lsp_work_done_progress_cancel(self, params: types.WorkDoneProgressCancelParams) -> None:
        """The user pressed cancel on a progress: cancel the command that owns the token."""
        server: Any = self._server
        if isinstance(params.token, bool) or not isinstance(params.token, (int, str)):
            log.warning("workDoneProgress/cancel with a token that is not an integer or string")
            return
        task = server.cancel_on_token.get(params.token)
        if task is not None and not task.done():
            log.info("cancelling the request of progress token %s", params.token)
            task.cancel()
        future = self.progress.tokens.pop(params.token, None)
        if future is not None:
            future.cancel()
