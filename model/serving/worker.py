"""The model worker: one process owns the model and serves every client of the user.

Language servers (one per editor window), ``starchat ask`` and ``starchat chat`` connect to
it over a Unix socket (mode 0600 in a 0700 directory), starting it if absent
(``model.serving.client``). TCP is used only when configured, on loopback by default, and then the
first frame must be a ``hello`` carrying the shared secret.

The socket is bound before the model loads, so clients connect at once and get
``progress`` frames while they wait. The engine depends on the spec (``ModelSpec.engine``),
and so does the scheduler (``model.serving.scheduler``): GGUF files run on llama.cpp, each
request on a thread of its own, llama.cpp's slots batching the concurrent ones
(``LlamaCppScheduler``; a code completion's prompt goes in small steps while a chat
streams); everything else runs on the torch engine, one scheduler thread advancing every
active request one token per turn in one batched forward pass (``TorchScheduler``;
``--no-batch`` steps them round robin), so concurrent clients stream at the same time and a
short request is never stuck behind a long one. ``cancel`` frames and client disconnects
stop a request before its next decode step.

The worker exits by itself after ``--idle-timeout`` seconds without clients, a few seconds
after a failed model load once no client is connected, or when its socket file is removed
or replaced (so a test's temp dir takes its worker with it). A spec whose files are bad
(``model.runtime.model_files.preflight``) ends it before it opens its socket.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..runtime.paths import remove_scratch, unix_address
from ..runtime.spec import ModelSpec, ModelSpecError
from . import protocol
from .protocol import ProtocolError
from .scheduler import Job, Scheduler, scheduler_for

log = logging.getLogger("starchat.worker")
DEFAULT_IDLE_TIMEOUT = float(os.environ.get("STARCHAT_WORKER_IDLE_TIMEOUT", 900))
# After a failed load, exit once no client has been connected for this long.
LOAD_ERROR_LINGER_S = float(os.environ.get("STARCHAT_WORKER_LOAD_ERROR_LINGER", 3))


class WorkerServer:
    """The asyncio side: connections, frames, and handing jobs to the scheduler."""

    def __init__(self, scheduler: Scheduler, secret: str | None = None, idle_timeout: float = DEFAULT_IDLE_TIMEOUT):
        self.scheduler = scheduler
        self.secret = secret
        self.idle_timeout = idle_timeout
        self.connections = 0
        self.last_activity = time.monotonic()
        self._next_conn = 0
        self.socket_inode: int | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._next_conn += 1
        conn_id = self._next_conn
        self.connections += 1
        loop = asyncio.get_running_loop()
        authed = self.secret is None

        def send(frame: dict) -> None:
            if not writer.is_closing():
                writer.write(protocol.pack(frame))

        def emit(frame: dict) -> None:  # called from the scheduler thread
            loop.call_soon_threadsafe(send, frame)

        try:
            while True:
                try:
                    frame = await protocol.read_frame(reader)
                except ProtocolError as exc:
                    send({"type": "error", "id": None, "message": str(exc)})
                    if exc.fatal:
                        break
                    continue
                if frame is None:
                    break
                self.last_activity = time.monotonic()
                kind, req_id = frame["type"], frame.get("id")
                if not authed:
                    if kind == "hello" and protocol.secrets_match(frame.get("secret"), self.secret or ""):
                        authed = True
                        send({"type": "hello", "version": protocol.PROTOCOL_VERSION, **self.scheduler.info})
                        continue
                    send({"type": "error", "id": req_id, "message": "Authentication failed: the first frame must be hello with the shared secret."})
                    break
                if kind == "hello":
                    send({"type": "hello", "version": protocol.PROTOCOL_VERSION, **self.scheduler.info})
                elif kind == "info":
                    send({"type": "info", "id": req_id, **self.scheduler.info, "load_error": self.scheduler.load_error})
                elif kind == "generate":
                    if not self.scheduler.ready.is_set():
                        send({"type": "progress", "id": req_id, "message": f"Loading model {self.scheduler.spec.display_name}"})
                    self.scheduler.submit(Job((conn_id, req_id), frame, emit))
                elif kind == "cancel":
                    self.scheduler.cancel((conn_id, req_id))
                else:
                    send({"type": "error", "id": req_id, "message": f"Unknown frame type {kind!r}."})
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.scheduler.cancel_connection(conn_id)
            self.connections -= 1
            self.last_activity = time.monotonic()
            writer.close()

    async def watch(self, socket_file: Path | None) -> None:
        """Exit when idle too long, or when our socket file is gone or replaced."""
        inode = self.socket_inode = socket_file.stat().st_ino if socket_file else None
        while True:
            await asyncio.sleep(1.0)
            if socket_file is not None:
                try:
                    if socket_file.stat().st_ino != inode:
                        log.info("Socket %s was replaced; exiting", socket_file)
                        return
                except FileNotFoundError:
                    log.info("Socket %s was removed; exiting", socket_file)
                    return
            idle = time.monotonic() - self.last_activity
            if self.scheduler.load_error and self.connections == 0 and idle > LOAD_ERROR_LINGER_S:
                # Nothing to serve: whoever waited was told why; a later client starts a new
                # worker and is told again.
                log.info("The model could not be loaded and no client is connected; exiting")
                return
            if self.connections == 0 and not self.scheduler.busy and idle > self.idle_timeout:
                log.info("Idle for %.0f s; exiting", idle)
                return


def _exit_now(*_: Any) -> None:
    remove_scratch()  # os._exit runs no finally: e.g. llama.cpp's listener folder while it loads
    os._exit(0)


async def _restore_signals(scheduler: Scheduler) -> None:
    """Take SIGTERM/SIGINT back once the model is loaded: llama.cpp installs handlers of its
    own that stop only its loop, which would leave the worker running without a model."""
    await asyncio.to_thread(scheduler.ready.wait)
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)


async def serve(spec: ModelSpec, socket_file: Path | None, tcp: str | None, secret: str | None,
                idle_timeout: float, batch: bool = True) -> None:
    scheduler = scheduler_for(spec, batch=batch)
    server = WorkerServer(scheduler, secret if tcp else None, idle_timeout)
    if tcp:
        host, port = protocol.parse_hostport(tcp)
        srv = await asyncio.start_server(server.handle, host, port)
        watched = None
    else:
        assert socket_file is not None
        old_umask = os.umask(0o177)  # the socket is created 0600
        try:
            if socket_file.exists():
                socket_file.unlink()
            with unix_address(socket_file) as address:
                srv = await asyncio.start_unix_server(server.handle, address)
        finally:
            os.umask(old_umask)
        watched = socket_file
    scheduler.start()
    log.info("Worker for %s listening on %s (pid %d)", spec, tcp or socket_file, os.getpid())
    async with srv:
        restore = asyncio.ensure_future(_restore_signals(scheduler))
        await server.watch(watched)
        restore.cancel()
    if watched is not None and server.socket_inode is not None:
        try:  # remove the socket only if it is still ours
            if watched.stat().st_ino == server.socket_inode:
                watched.unlink()
        except FileNotFoundError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="starchat worker", description="Run the shared model worker.")
    parser.add_argument("--model", default="default", help="model spec: default, a folder, a .gguf file or an HF id")
    parser.add_argument("--socket", help="Unix socket path (default: one per model in the runtime dir)")
    parser.add_argument("--tcp", help="listen on HOST:PORT instead (needs STARCHAT_WORKER_SECRET)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --tcp address")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, help="exit after this many idle seconds")
    parser.add_argument("--no-batch", action="store_true", help="step concurrent requests one by one instead of batching them")
    parser.add_argument("--log-level", default=os.environ.get("STARCHAT_WORKER_LOG_LEVEL", "INFO"),
                        help="DEBUG also logs each code completion's timings (env STARCHAT_WORKER_LOG_LEVEL: "
                             "for a worker a client starts)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from ..runtime.model_files import ModelFileError, preflight

    try:
        spec = ModelSpec.parse(args.model)  # the canonical form its client sent: absolute
        preflight(spec.kind, spec.location)  # a bad file ends us here, before any client waits
    except (ModelSpecError, ModelFileError) as exc:
        print(f"{protocol.WORKER_REFUSAL}{exc}", file=sys.stderr)  # noqa: T201
        return 2
    secret = os.environ.get("STARCHAT_WORKER_SECRET")
    if args.tcp:
        try:
            host, _ = protocol.parse_hostport(args.tcp)
        except ValueError as exc:
            print(f"starchat worker: {exc}", file=sys.stderr)  # noqa: T201
            return 2
        if not secret:
            print("starchat worker: --tcp needs a shared secret in STARCHAT_WORKER_SECRET.", file=sys.stderr)  # noqa: T201
            return 2
        if not protocol.is_loopback(host) and not args.allow_remote:
            print(f"starchat worker: {host} is not loopback; pass --allow-remote to listen there.", file=sys.stderr)  # noqa: T201
            return 2
    socket_file = Path(args.socket) if args.socket else protocol.socket_path_for(spec)
    signal.signal(signal.SIGTERM, _exit_now)
    asyncio.run(serve(spec, socket_file, args.tcp, secret, args.idle_timeout,
                      batch=not args.no_batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
