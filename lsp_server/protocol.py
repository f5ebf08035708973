"""The JSON-RPC protocol of the StarChat server: our own ``workspace/executeCommand``.

pygls 2 hides the request's ``workDoneToken`` from ``@command`` handlers and runs them as
a sub-task that ``$/cancelRequest`` cannot reach, so we replace the built-in method with
an async one: the request's task *is* the command, cancelling it reaches the generation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInternalError
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from . import commands
from .arguments import invalid, one_argument
from .features import conversations, generation

log = logging.getLogger(__name__)


class _Answered:
    """A message we could not structure and already answered with an error."""

    jsonrpc = None


ANSWERED = _Answered()


class StarChatProtocol(LanguageServerProtocol):
    """LanguageServerProtocol with a cancellable, token-aware executeCommand."""

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
        if command not in commands.ALL_COMMANDS:
            known = ", ".join(commands.ALL_COMMANDS)
            raise invalid(f"Unknown command {command!r}; StarChat knows {known}.")
        args = one_argument(command, params.arguments)
        try:
            if command in conversations.HANDLERS:
                return conversations.HANDLERS[command](server, args)
            return await generation.run_command(server, command, args, params.work_done_token)
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
        task = server.cancel_on_token.get(params.token)
        if task is not None and not task.done():
            log.info("cancelling the request of progress token %s", params.token)
            task.cancel()
        future = self.progress.tokens.pop(params.token, None)
        if future is not None:
            future.cancel()
