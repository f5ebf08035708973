"""Clients of the shared model worker, blocking and asyncio.

``ensure_worker`` connects to the worker for a model spec, starting it when absent; a file
lock makes sure two clients starting at once end up with one worker. If the worker dies,
pending requests fail at once with ``WorkerError`` and the next request starts a new one.

Events yielded by ``generate`` are the worker's frames as dicts: ``progress``, ``delta``,
then one ``done`` or ``error`` (an ``error`` is also raised as ``WorkerError`` by the
``*_text`` helpers).
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from ..runtime.paths import unix_address
from ..runtime.spec import ModelSpec
from . import protocol
from .protocol import ProtocolError

START_TIMEOUT = float(os.environ.get("STARCHAT_WORKER_START_TIMEOUT", 60))
DIED = "The model worker exited unexpectedly; the next request starts a new one."


class WorkerError(RuntimeError):
    """The worker failed, died or refused a request; the message is for the user."""


def _connect_unix(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_address(path) as address:
            sock.connect(address)
        return sock
    except OSError:
        sock.close()
        return None


def _answers(path: Path, timeout: float = 10.0) -> bool:
    """True when a worker answers on ``path``. A connection alone is not proof: a worker
    that is being killed may still accept for a moment while its process is torn down (a
    llama.cpp worker, with its threads and mappings, takes longest), then closes it unread."""
    sock = _connect_unix(path)
    if sock is None:
        return False
    try:
        sock.settimeout(timeout)
        sock.sendall(protocol.pack({"type": "info", "id": "probe"}))
        return protocol.recv_frame(sock) is not None
    except TimeoutError:
        return True  # alive but slow (a busy machine): do not start a second worker
    except (OSError, ProtocolError):
        return False
    finally:
        sock.close()


def _log_tail(log_file: Path, lines: int = 5) -> str:
    try:
        text = log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " ".join(text[-lines:])


def _start_failure(log_file: Path, returncode: int) -> str:
    """Why the worker exited at start: its own one-sentence refusal when it gave one."""
    last = _log_tail(log_file, 1)
    if last.startswith(protocol.WORKER_REFUSAL):
        reason = last[len(protocol.WORKER_REFUSAL):].strip().rstrip(".")
        return f"The model worker cannot serve this model: {reason}."
    return f"The model worker did not start: {_log_tail(log_file) or 'exit code ' + str(returncode)}"


def ensure_worker(spec: ModelSpec | str, socket_path: Path | None = None) -> Path:
    """Make sure a worker serves ``spec``; start one if none answers. Returns its socket."""
    spec = ModelSpec.parse(spec)  # (a ModelSpec comes back as it is)
    path = Path(socket_path) if socket_path else protocol.socket_path_for(spec)
    if _answers(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(path):
            return path
        log_file = path.with_suffix(".log")
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "model.serving.worker", "--model", str(spec), "--socket", str(path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,  # outlives the client; Ctrl-C in a terminal spares it
                cwd=str(Path(__file__).resolve().parents[2]),
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise WorkerError(_start_failure(log_file, proc.returncode))
            sock = _connect_unix(path)
            if sock:
                sock.close()
                return path
            time.sleep(0.05)
        proc.kill()
        raise WorkerError(f"The model worker did not open its socket within {START_TIMEOUT:.0f} s.")


class _WorkerAddress:
    """Where a client finds its worker and how it says hello: the set-up the blocking and
    the asyncio client share."""

    def __init__(self, model: ModelSpec | str = "default", *, socket_path: str | Path | None = None,
                 autostart: bool = True, tcp: str | None = None, secret: str | None = None,
                 base_dir: str | Path | None = None):
        # (a string is parsed here, once: relative paths against base_dir or the working directory)
        self.model = ModelSpec.parse(model, base_dir)
        self.socket_path = Path(socket_path) if socket_path else None
        self.autostart = autostart
        self.tcp = tcp
        self.secret = secret if secret is not None else os.environ.get("STARCHAT_WORKER_SECRET")

    def _tcp_address(self) -> tuple[str, int]:
        return protocol.parse_hostport(self.tcp or "")

    def _hello(self) -> dict:
        return {"type": "hello", "secret": self.secret or ""}

    @staticmethod
    def _check_hello(reply: dict | None) -> None:
        if not reply or reply.get("type") != "hello":
            raise WorkerError((reply or {}).get("message", "The worker refused the connection."))

    def _unix_path(self) -> Path:
        """The worker's socket; with ``autostart``, starts the worker first (blocking)."""
        if self.autostart:
            return ensure_worker(self.model, self.socket_path)
        return self.socket_path or protocol.socket_path_for(self.model)

    @staticmethod
    def _not_listening(path: Path) -> WorkerError:
        return WorkerError(f"No model worker is listening on {path}.")


class WorkerClient(_WorkerAddress):
    """Blocking client: one request at a time (CLI, evaluation, benchmarks)."""

    def __init__(self, model: ModelSpec | str = "default", **where: Any):
        super().__init__(model, **where)
        self.sock: socket.socket | None = None
        self._ids = itertools.count(1)

    def connect(self) -> None:
        if self.sock is not None:
            return
        if self.tcp:
            self.sock = socket.create_connection(self._tcp_address(), timeout=10)
            self.sock.settimeout(None)
            self._send(self._hello())
            self._check_hello(self._recv())
            return
        path = self._unix_path()
        sock = _connect_unix(path)
        if sock is None:
            raise self._not_listening(path)
        self.sock = sock

    def _send(self, frame: dict) -> None:
        assert self.sock is not None
        try:
            self.sock.sendall(protocol.pack(frame))
        except OSError:
            self.close()
            raise WorkerError(DIED) from None

    def _recv(self) -> dict:
        assert self.sock is not None
        try:
            frame = protocol.recv_frame(self.sock)
        except (OSError, ProtocolError):
            frame = None
        if frame is None:
            self.close()
            raise WorkerError(DIED)
        return frame

    def info(self) -> dict:
        self.connect()
        req_id = next(self._ids)
        self._send({"type": "info", "id": req_id})
        while True:
            frame = self._recv()
            if frame.get("id") == req_id:
                return frame

    def ready_info(self, limit_s: float = 1800.0) -> dict:
        """``info`` once the model is loaded (its engine, FIM format, ...); WorkerError with the
        worker's sentence when it could not load it, or after ``limit_s``."""
        deadline = time.monotonic() + limit_s
        while True:
            info = self.info()
            if info.get("load_error"):
                raise WorkerError(info["load_error"])
            if info.get("ready"):
                return info
            if time.monotonic() > deadline:
                raise WorkerError(f"The model worker did not load its model in {limit_s:.0f} s.")
            time.sleep(0.1)

    def generate(self, request: dict, request_id: Any = None) -> Iterator[dict]:
        """Send one request and yield its events until ``done``/``error``.

        Closing the iterator early (break, Ctrl-C) sends ``cancel`` and drains the rest.
        """
        self.connect()
        req_id = request_id if request_id is not None else next(self._ids)
        self._send({**request, "type": "generate", "id": req_id})
        finished = False
        try:
            while True:
                frame = self._recv()
                if frame.get("id") not in (req_id, None):
                    continue
                finished = frame["type"] in ("done", "error")
                yield frame
                if finished:
                    return
        finally:
            if not finished and self.sock is not None:
                self._cancel_and_drain(req_id)

    def _cancel_and_drain(self, req_id: Any) -> None:
        try:
            self._send({"type": "cancel", "id": req_id})
            while self._recv().get("type") not in ("done", "error"):
                pass
        except WorkerError:
            pass

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncWorkerClient(_WorkerAddress):
    """asyncio client for the language server: many requests over one connection."""

    def __init__(self, model: ModelSpec | str = "default", **where: Any):
        super().__init__(model, **where)
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._queues: dict[Any, asyncio.Queue] = {}
        self._connect_lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        async with self._connect_lock:
            if self.connected:
                return
            if self.tcp:
                reader, writer = await asyncio.open_connection(*self._tcp_address())
                writer.write(protocol.pack(self._hello()))
                try:
                    self._check_hello(await protocol.read_frame(reader))
                except WorkerError:
                    writer.close()
                    raise
            else:
                path = await asyncio.to_thread(self._unix_path)
                try:
                    with unix_address(path) as address:
                        reader, writer = await asyncio.open_unix_connection(address)
                except OSError:
                    raise self._not_listening(path) from None
            self._writer = writer
            self._reader_task = asyncio.create_task(self._read_loop(reader))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                frame = await protocol.read_frame(reader)
                if frame is None:
                    break
                queue = self._queues.get(frame.get("id"))
                if queue is not None:
                    queue.put_nowait(frame)
        except (ProtocolError, OSError):
            pass
        finally:
            if self._writer is not None:
                self._writer.close()
            self._writer = None
            for queue in self._queues.values():
                queue.put_nowait(WorkerError(DIED))

    async def _send(self, frame: dict) -> None:
        if not self.connected:
            raise WorkerError(DIED)
        assert self._writer is not None
        self._writer.write(protocol.pack(frame))
        await self._writer.drain()

    async def info(self) -> dict:
        await self.connect()
        req_id = "info-" + uuid.uuid4().hex
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[req_id] = queue
        try:
            await self._send({"type": "info", "id": req_id})
            frame = await queue.get()
            if isinstance(frame, Exception):
                raise frame
            return frame
        finally:
            self._queues.pop(req_id, None)

    async def generate(self, request: dict, request_id: Any = None) -> AsyncIterator[dict]:
        """Yield the events of one request; leaving early cancels it in the worker."""
        await self.connect()
        req_id = request_id if request_id is not None else uuid.uuid4().hex
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[req_id] = queue
        finished = False
        try:
            await self._send({**request, "type": "generate", "id": req_id})
            while True:
                frame = await queue.get()
                if isinstance(frame, Exception):
                    finished = True
                    raise frame
                finished = frame["type"] in ("done", "error")
                yield frame
                if finished:
                    return
        finally:
            self._queues.pop(req_id, None)
            if not finished and self.connected:
                try:
                    await self._send({"type": "cancel", "id": req_id})
                except (WorkerError, OSError):
                    pass

    async def cancel(self, request_id: Any) -> None:
        """Ask the worker to stop a request; its ``done`` (finish_reason cancelled) follows."""
        if self.connected:
            try:
                await self._send({"type": "cancel", "id": request_id})
            except (WorkerError, OSError):
                pass

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            try:
                await self._reader_task
            except (asyncio.CancelledError, Exception):
                pass
        self._writer = None
