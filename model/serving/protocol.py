"""The worker protocol: msgpack maps in length-prefixed frames.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack, which must
decode to a map with a string ``type``. Unpacking is bounded (frame size, string, array and
map lengths, nesting depth), so a bad frame costs its sender an ``error`` frame and never
the worker.

Client -> worker: ``hello`` (``secret`` for TCP), ``generate`` (``id`` + request),
``cancel`` (``id``), ``info`` (``id``).
Worker -> client: ``hello``, ``progress``, ``delta`` (``text``), ``done`` (``usage``,
``finish_reason``, ``truncated``), ``error`` (``message``), ``info``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import tempfile
from pathlib import Path
from typing import Any

import msgpack

from ..runtime.spec import ModelSpec

PROTOCOL_VERSION = 1
#: The worker's last line on stderr when it refuses a spec before serving (client.ensure_worker).
WORKER_REFUSAL = "starchat worker: "
MAX_FRAME = 16 * 1024 * 1024
MAX_DEPTH = 16
_HEADER = struct.Struct(">I")
_LIMITS = dict(
    max_str_len=MAX_FRAME,
    max_bin_len=MAX_FRAME,
    max_array_len=100_000,
    max_map_len=10_000,
    max_ext_len=0,
)


class ProtocolError(ValueError):
    """A frame that cannot be accepted; ``fatal`` when the stream cannot be trusted after it."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


def _depth(obj: Any, limit: int) -> None:
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise ProtocolError(f"Frame nests deeper than {limit} levels.")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def pack(frame: dict) -> bytes:
    body = msgpack.packb(frame, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ProtocolError("Frame too large.")
    return _HEADER.pack(len(body)) + body


def unpack(body: bytes) -> dict:
    """Decode one frame body with bounded sizes; raises ProtocolError with a sentence."""
    try:
        frame = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True, **_LIMITS)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"Frame is not valid msgpack ({type(exc).__name__}).") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ProtocolError("Frame must be a map with a string 'type'.")
    _depth(frame, MAX_DEPTH)
    return frame


def check_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"Frame of {length} bytes exceeds the {MAX_FRAME}-byte limit.", fatal=True)
    return length


async def read_frame(reader: asyncio.StreamReader) -> dict | None:
    """The next frame, or None at a clean end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("Connection closed inside a frame header.", fatal=True) from None
        return None
    length = check_length(header)
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError("Connection closed inside a frame.", fatal=True) from None
    return unpack(body)


def recv_frame(sock: socket.socket) -> dict | None:
    """Blocking read of the next frame, or None at end of stream."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    body = _recv_exactly(sock, check_length(header))
    if body is None:
        raise ProtocolError("Connection closed inside a frame.", fatal=True)
    return unpack(body)


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            if got:
                raise ProtocolError("Connection closed inside a frame.", fatal=True)
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def runtime_dir() -> Path:
    """A private (0700) directory for worker sockets."""
    if os.environ.get("STARCHAT_RUNTIME_DIR"):
        path = Path(os.environ["STARCHAT_RUNTIME_DIR"])
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "starchat"
    else:
        path = Path(tempfile.gettempdir()) / f"starchat-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user; set STARCHAT_RUNTIME_DIR.")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def socket_path_for(spec: ModelSpec) -> Path:
    """One worker per model: the socket name is keyed by the parsed spec (``ModelSpec.key``:
    its absolute form, so two projects' ``./runs/x`` get two workers)."""
    return runtime_dir() / f"worker-{spec.key()}.sock"


def parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"Expected HOST:PORT, got {value!r}.")
    return host.strip("[]"), int(port)


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface only (not ``0.0.0.0``)."""
    import ipaddress

    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secrets_match(given: Any, expected: str) -> bool:
    """Constant-time comparison of a shared secret, for any text a client sends.

    Compared as UTF-8 bytes: ``hmac.compare_digest`` raises TypeError on ``str`` with
    characters outside ASCII, which would let a client end the connection handler with an
    exception instead of an authentication error.
    """
    import hmac

    if not isinstance(given, str) or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))
