"""A bare JSON-RPC client for hostile-input tests: our own Content-Length framer and reader.

pytest-lsp's client cannot send what these tests send (bodies that are not UTF-8, object
ids, batches, requests before ``initialize``), so this one writes raw bytes to the real
``starchat lsp`` subprocess and reads every frame it answers, keeping the raw bytes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SERVER_COMMAND = [sys.executable, "-m", "lsp_server", "lsp"]
#: A client that offers nothing: the server then never asks us (no progress tokens).
NO_CAPABILITIES: dict = {}
#: What Python traceback text looks like inside a JSON string (quotes escaped or not).
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File \\?"[^"\\]+\\?", line \d+')


def strict_loads(raw: bytes) -> Any:
    """Parse like a strict JSON parser: UTF-8 only, no NaN/Infinity, no huge floats."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    def finite(text: str) -> float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise ValueError(f"{text} overflows a double")
        return value

    return json.loads(raw.decode("utf-8"), parse_constant=refuse, parse_float=finite)


def frame(body: bytes) -> bytes:
    """One LSP frame around ``body``."""
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


#: Stand-ins for the JSON numbers 1e400 and -1e400 (valid JSON that Python reads as
#: infinity; ``json.dumps`` would write ``Infinity``, which is not JSON).
HUGE, MINUS_HUGE = "\x00json-number:1e400", "\x00json-number:-1e400"


def encode(message: Any) -> bytes:
    """A message as JSON bytes (lone surrogates are written as JSON escapes)."""
    text = json.dumps(message, allow_nan=False)
    for marker, number in ((HUGE, "1e400"), (MINUS_HUGE, "-1e400")):
        text = text.replace(json.dumps(marker), number)
    return text.encode("ascii")


class RawServer:
    """``starchat lsp`` over stdio, spoken to in raw frames; every answer is recorded."""

    def __init__(self, workspace: Path | None = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="starchat-raw-"))
        self.workspace = workspace or self.tmp / "workspace"
        self.workspace.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "STARCHAT_RUNTIME_DIR": str(self.tmp / "run"),
            "STARCHAT_DATA_DIR": str(self.tmp / "data"),
            "PYTHONUNBUFFERED": "1",
        }
        self.stderr_path = self.tmp / "stderr.log"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            SERVER_COMMAND,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self.frames: list[bytes] = []  # every body the server sent, raw
        self.bad_frames: list[str] = []  # framing problems of the server's output
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # -- reading -------------------------------------------------------------------------
    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        try:
            while True:
                length = None
                while True:
                    line = out.readline()
                    if not line:
                        return
                    if line == b"\r\n":
                        break
                    name, _, value = line.decode("ascii").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length is None:
                    self.bad_frames.append("a header block without Content-Length")
                    continue
                body = out.read(length)
                with self._cond:
                    self.frames.append(body)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def messages(self) -> list[Any]:
        """Every message so far, parsed strictly (raises on the first invalid one)."""
        with self._cond:
            frames = list(self.frames)
        return [strict_loads(body) for body in frames]

    def wait_for(self, predicate, timeout: float = 30.0, start: int = 0) -> Any:
        """The first message from index ``start`` (parsed) for which ``predicate`` is true."""
        deadline = time.monotonic() + timeout
        seen = start
        with self._cond:
            while True:
                while seen < len(self.frames):
                    message = strict_loads(self.frames[seen])
                    seen += 1
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(
                        f"no matching message within {timeout} s "
                        f"(server {'exited' if self._eof else 'alive'}); "
                        f"stderr tail: {self.stderr_tail()}"
                    )
                self._cond.wait(min(remaining, 0.5))

    def answers_to(self, msg_id: Any) -> list[dict]:
        """All responses carrying ``msg_id``."""
        return [
            m for m in self.messages()
            if isinstance(m, dict) and "method" not in m and m.get("id") == msg_id
            and type(m.get("id")) is type(msg_id)
        ]

    def tracebacks_sent(self) -> list[bytes]:
        """Frames the server sent that contain Python traceback text."""
        with self._cond:
            return [body for body in self.frames if TRACEBACK.search(body.decode("utf-8", "replace"))]

    def stderr_tail(self, chars: int = 2000) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-chars:]

    # -- writing -------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: Any) -> None:
        """Frame and send a message (a dict, or anything else JSON can hold)."""
        self.write(frame(encode(message)))

    def request(self, msg_id: Any, method: str, params: Any = None, timeout: float = 30.0) -> dict:
        """Send a request and wait for its answer."""
        message: dict = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self.wait_for(
            lambda m: isinstance(m, dict) and "method" not in m and m.get("id") == msg_id
            and type(m.get("id")) is type(msg_id),
            timeout,
        )

    def notify(self, method: str, params: Any = None) -> None:
        message: dict = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def initialize(self, settings: dict | None = None, msg_id: Any = "init") -> dict:
        """initialize + initialized, with settings that start no worker."""
        options = {"starchat": self.offline_settings()}
        if settings:
            options["starchat"].update(settings)
        answer = self.request(msg_id, "initialize", {
            "processId": None,
            "rootUri": self.workspace.as_uri(),
            "capabilities": NO_CAPABILITIES,
            "initializationOptions": options,
        })
        self.notify("initialized", {})
        return answer

    def offline_settings(self) -> dict:
        """No autostart and a socket that does not exist: the model is never loaded."""
        return {"worker": {"autostart": False, "socket_path": str(self.tmp / "run" / "none.sock")}}

    # -- the end -------------------------------------------------------------------------
    def exit_code(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Stop the server (politely if it still listens) and remove every temp file."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
