"""A small HTTP/1.1 client on asyncio streams, enough for Server-Sent Events.

The OpenAI-compatible backend needs three things from HTTP: a JSON request, a streamed
``text/event-stream`` answer read line by line with a timeout *between* chunks, and a way
to stop reading at once (closing the socket is how a client cancels a generation on vLLM,
TGI, llama.cpp server or Ollama). The standard library offers no asyncio HTTP client, and
the language server must not block its event loop, so this module speaks HTTP itself:
one request per connection (``Connection: close``), chunked or length-delimited bodies.

Every failure is an :class:`HTTPFailure` whose message is one sentence for the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_LINE = 1 << 20  # one SSE line (one chunk of JSON) larger than 1 MiB is not an answer
MAX_ERROR_BODY = 64 * 1024


class HTTPFailure(Exception):
    """The server could not be reached, timed out or broke the protocol (one sentence)."""


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: ``http(s)://host:port/base`` (base without a trailing slash)."""

    url: str
    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Check a base URL such as ``http://127.0.0.1:8000/v1``; ValueError with a sentence."""
        if not isinstance(url, str) or not url.strip():
            raise ValueError("The OpenAI-compatible backend needs a url such as http://127.0.0.1:8000/v1.")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"The backend url {url!r} must start with http:// or https:// and name a host.")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"The backend url {url!r} has an invalid port.") from None
        return cls(url.strip().rstrip("/"), parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


class Response:
    """An open HTTP response; read it with :meth:`lines` or :meth:`read_body`, then close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 status: int, reason: str, headers: dict[str, str], where: str):
        self.reader, self.writer = reader, writer
        self.status, self.reason, self.headers = status, reason, headers
        self.where = where
        self.closed_by_us = False

    def close(self) -> None:
        """Drop the connection; a pending read returns at once (this is how we cancel)."""
        self.closed_by_us = True
        self.writer.close()

    async def _read(self, coro, timeout: float):
        try:
            return await asyncio.wait_for(coro, timeout)
        except TimeoutError:
            raise HTTPFailure(f"The server at {self.where} sent nothing for {timeout:g} s; giving up.") from None
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except (asyncio.LimitOverrunError, ValueError):
            raise HTTPFailure(f"The server at {self.where} sent a line longer than {MAX_LINE} bytes.") from None
        except OSError as exc:
            if self.closed_by_us:
                return b""
            raise HTTPFailure(f"The connection to {self.where} broke: {exc.strerror or exc}.") from None

    async def chunks(self, timeout: float) -> AsyncGenerator[bytes, None]:
        """The body as it arrives, de-chunked; ``timeout`` applies to each read."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await self._read(self.reader.readline(), timeout)
                if not size_line:
                    return  # connection closed mid-body: the caller decides if that is complete
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise HTTPFailure(f"The server at {self.where} sent a malformed chunked body.") from None
                if size == 0:
                    return
                data = await self._read(self.reader.readexactly(size), timeout)
                yield data
                await self._read(self.reader.readline(), timeout)  # the CRLF after each chunk
                if len(data) < size:
                    return
        elif "content-length" in self.headers:
            left = int(self.headers["content-length"])
            while left > 0:
                data = await self._read(self.reader.read(min(left, 65536)), timeout)
                if not data:
                    return
                left -= len(data)
                yield data
        else:  # HTTP/1.0 style: the body runs until the server closes the connection
            while data := await self._read(self.reader.read(65536), timeout):
                yield data

    async def lines(self, timeout: float) -> AsyncGenerator[str, None]:
        """The body split into text lines (without line endings)."""
        buffer = b""
        async with contextlib.aclosing(self.chunks(timeout)) as chunks:  # closed even if we stop early
            async for data in chunks:
                buffer += data
                if len(buffer) > MAX_LINE and b"\n" not in buffer:
                    raise HTTPFailure(f"The server at {self.where} sent a line longer than {MAX_LINE} bytes.")
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    yield line.rstrip(b"\r").decode("utf-8", errors="replace")
        if buffer:
            yield buffer.rstrip(b"\r").decode("utf-8", errors="replace")

    async def read_body(self, timeout: float) -> bytes:
        """The whole (error or JSON) body, at most :data:`MAX_ERROR_BODY` bytes."""
        body = b""
        async with contextlib.aclosing(self.chunks(timeout)) as chunks:
            async for data in chunks:
                body += data
                if len(body) >= MAX_ERROR_BODY:
                    break
        return body[:MAX_ERROR_BODY]


async def request(endpoint: Endpoint, method: str, path: str, *, body: dict | None = None,
                  headers: dict[str, str] | None = None, connect_timeout: float = 10.0,
                  read_timeout: float = 60.0) -> Response:
    """Send one request to ``endpoint.base_path + path`` and return once the headers are in."""
    where = endpoint.url
    context = ssl.create_default_context() if endpoint.scheme == "https" else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(endpoint.host, endpoint.port, ssl=context, limit=MAX_LINE),
            connect_timeout,
        )
    except TimeoutError:
        raise HTTPFailure(f"The server at {where} did not accept a connection within {connect_timeout:g} s.") from None
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise HTTPFailure(f"The server at {where} is unreachable: {reason}.") from None
    payload = json.dumps(body).encode() if body is not None else b""
    host = endpoint.host if ":" not in endpoint.host else f"[{endpoint.host}]"
    lines = [
        f"{method} {endpoint.base_path}{path} HTTP/1.1",
        f"Host: {host}:{endpoint.port}",
        "Connection: close",
        "Accept: text/event-stream, application/json",
        "User-Agent: starchat-lsp",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        await writer.drain()
    except OSError as exc:
        writer.close()
        raise HTTPFailure(f"The server at {where} closed the connection: {exc.strerror or exc}.") from None
    response = Response(reader, writer, 0, "", {}, where)
    try:
        status_line = await response._read(reader.readline(), read_timeout)
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HTTPFailure(f"The server at {where} did not answer with HTTP.")
        response.status, response.reason = int(parts[1]), parts[2].strip() if len(parts) > 2 else ""
        while True:
            line = (await response._read(reader.readline(), read_timeout)).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            response.headers[name.strip().lower()] = value.strip()
    except BaseException:
        writer.close()
        raise
    return response


async def sse_events(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The ``data`` of each Server-Sent Event (multi-line data joined with newlines)."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # a comment, used as keep-alive by some servers
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def error_message(body: bytes) -> str:
    """The human part of an error body: OpenAI, TGI, Ollama and FastAPI shapes, else text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:300] or "no message"
    if isinstance(doc, dict):
        for key in ("error", "detail", "message"):
            value = doc.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("msg") or json.dumps(value)
            elif isinstance(value, list) and value:  # FastAPI validation errors
                value = "; ".join(str(v.get("msg", v)) if isinstance(v, dict) else str(v) for v in value)
            if isinstance(value, str) and value.strip():
                return value.strip()[:300]
    return text[:300]
