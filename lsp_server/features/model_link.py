"""The server's connection to the model (the shared worker or an OpenAI-compatible server).

``model.serving.client`` is imported only here and only after ``initialized``, so ``initialize``
never pays for it; the worker process owns torch and the weights.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from lsprotocol import types

from ..config import Settings, model_backend
from .progress import make_token

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The worker could not be reached or could not load the model (message is a sentence)."""


class ModelLink:
    """One model client per server; requests await :meth:`client` until it is ready."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._task: asyncio.Task | None = None
        self._client: Any = None
        self._key: tuple | None = None

    @property
    def ready(self) -> bool:
        """True once the worker answered and the model is loaded."""
        return self._task is not None and self._task.done() and not self._task.cancelled() \
            and self._task.exception() is None

    def start(self, settings: Settings) -> None:
        """(Re)connect in the background when the model or worker settings changed."""
        key = (settings.model, settings.backend, settings.worker.socket_path,
               settings.worker.autostart)
        if key == self._key and self._task is not None:
            return
        self._key = key
        old_task, old_client = self._task, self._client
        self._client = None
        if old_task is not None and not old_task.done():
            old_task.cancel()
        if old_client is not None:
            self._server.keep_task(asyncio.ensure_future(old_client.close()))
        self._task = asyncio.ensure_future(self._connect(settings))
        # Exceptions are reported by client(); this keeps asyncio from logging them twice.
        self._task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def reset(self) -> None:
        """Forget a dead worker; the next request starts a fresh one."""
        self._key = None
        self._task = None
        client, self._client = self._client, None
        if client is not None:
            self._server.keep_task(asyncio.ensure_future(_quiet_close(client)))

    async def client(self) -> Any:
        """The connected client, waiting for the warm-up if it is still running."""
        if self._task is None:
            self.start(self._server.settings)
        assert self._task is not None
        try:
            return await asyncio.shield(self._task)
        except ModelUnavailable:
            self.reset()
            raise

    async def close(self) -> None:
        """Close the connection (the shared worker keeps running for other editors)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._client is not None:
            await _quiet_close(self._client)
            self._client = None

    async def _connect(self, settings: Settings) -> Any:
        from model.backends.openai_backend import make_async_client  # noqa: PLC0415
        from model.serving.client import WorkerError  # noqa: PLC0415 - keep start-up light

        token = await make_token(self._server, None)
        if token is not None:
            self._server.work_done_progress.begin(
                token,
                types.WorkDoneProgressBegin(
                    title="Loading model", message=settings.model, cancellable=False
                ),
            )
        outcome = "ready"
        try:
            # The local worker, or an OpenAI-compatible server: same interface, same events.
            # (a relative model path means one inside the workspace, whatever the server's cwd)
            client = make_async_client({**model_backend(settings), "base_dir": _workspace_root(self._server)})
            await client.connect()
            info = await _warm_up(client, self._server, token)
            log.info("model worker ready: %s", info)
            outcome = f"ready ({info.get('engine') or info.get('backend') or 'unknown engine'})"
            self._client = client
            return client
        except (WorkerError, OSError, ValueError) as exc:
            outcome = "failed"
            message = f"StarChat could not load the model {settings.model!r}: {exc}"
            self._server.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Error, message=message)
            )
            raise ModelUnavailable(message) from exc
        finally:
            if token is not None:
                self._server.work_done_progress.end(
                    token, types.WorkDoneProgressEnd(message=f"Model {outcome}")
                )
                self._server.work_done_progress.tokens.pop(token, None)


def _workspace_root(server: Any) -> str | None:
    try:
        return server.workspace.root_path or None
    except Exception:  # no workspace yet (initialize without a root)
        return None


async def _warm_up(client: Any, server: Any, token: Any) -> dict:
    """Wait until the worker has loaded the model, reporting progress meanwhile."""
    from model.serving.client import WorkerError  # noqa: PLC0415

    started = time.monotonic()
    reported = -1
    while True:
        info = await client.info()
        if info.get("load_error"):
            raise WorkerError(str(info["load_error"]))
        if info.get("ready"):
            return info
        waited = int(time.monotonic() - started)
        if token is not None and waited > reported and waited % 2 == 0:
            reported = waited  # every two seconds is plenty for a status line
            server.work_done_progress.report(
                token, types.WorkDoneProgressReport(message=f"Loading model ({waited} s)")
            )
        await asyncio.sleep(0.25)


async def _quiet_close(client: Any) -> None:
    try:
        await client.close()
    except Exception as exc:  # closing a dead connection is not worth an error
        log.debug("closing the worker client: %s", exc)
