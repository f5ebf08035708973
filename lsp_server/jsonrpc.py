"""JSON-RPC 2.0 on the wire: framing, strict parsing and the message envelope.

pygls parses each body with ``json.loads(body, object_hook=...)``, which structures every
nested object that looks like a message (so a request hidden in a notification's params
was answered) and lets non-UTF-8 bodies, ``NaN``, float or object ids, batches and deep
nesting through to places that fail with internal errors. Here a body is parsed once,
strictly, and its envelope checked before pygls sees it; what fails gets the JSON-RPC
error the spec names (see docs/lsp.md, "Errors"):

- a body that is not UTF-8 or not JSON (``NaN``/``Infinity`` are not JSON): -32700, id null
- anything that is not one request/notification/response object, a ``jsonrpc`` other
  than ``"2.0"``, an id that is not an integer or a string (``1.5``, ``100.0``, ``1e400``,
  objects, arrays), a batch (LSP has none), nesting deeper than the parser goes: -32600,
  with the id when it is a valid one, else null;
- a body longer than ``MAX_MESSAGE_BYTES`` (``STARCHAT_LSP_MAX_MESSAGE_BYTES``): it is read
  and dropped in small pieces, never held, and answered -32600 with id null.

Header names are case-insensitive and the space after the colon is optional (HTTP's
rules, which LSP's base protocol borrows): ``content-length:12`` frames like
``Content-Length: 12``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Callable
from typing import Any

from lsprotocol import types

log = logging.getLogger(__name__)

PARSE_ERROR = int(types.ErrorCodes.ParseError)
INVALID_REQUEST = int(types.ErrorCodes.InvalidRequest)
_CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(\d+)[ \t]*\r?\n?", re.IGNORECASE)
MAX_MESSAGE_BYTES = int(os.environ.get("STARCHAT_LSP_MAX_MESSAGE_BYTES", 64 * 1024 * 1024))
_DISCARD_CHUNK = 1 << 20
_DECODER = json.JSONDecoder()


class BadMessage(Exception):
    """A message answered with a JSON-RPC error before any handler runs."""

    def __init__(self, code: int, message: str, msg_id: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id

    def response(self) -> dict:
        """The error response (``"id": null`` when the id is unknown or unusable)."""
        return error_response(self.msg_id, self.code, self.message)


def error_response(msg_id: int | str | None, code: int, message: str) -> dict:
    """A JSON-RPC error response as plain JSON."""
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def valid_id(value: Any) -> bool:
    """LSP ids are integers or strings (a float such as ``1e400`` cannot be echoed back)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_body(body: bytes) -> Any:
    """The JSON value of a message body; :class:`BadMessage` when there is none."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessage(
            PARSE_ERROR, f"The message body is not UTF-8 (invalid byte at offset {exc.start})."
        ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise BadMessage(
            PARSE_ERROR,
            f"The message body is not valid JSON: {exc.msg} (line {exc.lineno}, "
            f"column {exc.colno}).",
        ) from None
    except RecursionError:
        raise BadMessage(
            INVALID_REQUEST,
            "The message is nested too deeply for this server (about 900 levels is the limit).",
            top_level_id(text),
        ) from None
    except ValueError as exc:  # NaN/Infinity, or an integer too long to convert
        raise BadMessage(PARSE_ERROR, f"The message body is not valid JSON: {exc}.") from None


def top_level_id(text: str) -> int | str | None:
    """The ``id`` of an object too deep for ``json.loads``, found without recursion."""
    depth = 0
    i, n = 0, len(text)
    key_at_depth_1: str | None = None
    expect_key = False
    while i < n:
        ch = text[i]
        if ch == '"':
            try:
                string, end = _DECODER.raw_decode(text, i)  # just the string literal at i
            except ValueError:
                return None
            if depth == 1 and expect_key:
                key_at_depth_1 = string
            i = end
            continue
        if ch in "{[":
            depth += 1
            expect_key = ch == "{" and depth == 1
        elif ch in "}]":
            depth -= 1
        elif ch == "," and depth == 1:
            expect_key = True
        elif ch == ":" and depth == 1:
            expect_key = False
            if key_at_depth_1 == "id":
                try:
                    value, _ = _DECODER.raw_decode(text, _skip_space(text, i + 1))
                except (ValueError, RecursionError):
                    return None
                return value if valid_id(value) else None
        i += 1
    return None


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string" if isinstance(value, str) else "a number"


def check_envelope(message: Any) -> None:
    """Refuse what is not one JSON-RPC 2.0 request, notification or response."""
    if isinstance(message, list):
        raise BadMessage(
            INVALID_REQUEST, "Batches are not part of LSP: send each message in its own frame."
        )
    if not isinstance(message, dict):
        raise BadMessage(INVALID_REQUEST, f"A message must be a JSON object, not {_kind(message)}.")
    has_id = "id" in message
    msg_id = message.get("id")
    reply_id = msg_id if has_id and valid_id(msg_id) else None
    if message.get("jsonrpc") != "2.0":
        raise BadMessage(INVALID_REQUEST, 'A message needs "jsonrpc": "2.0".', reply_id)
    if has_id and not valid_id(msg_id):
        raise BadMessage(
            INVALID_REQUEST, f"A message id must be an integer or a string, not {_kind(msg_id)}."
        )
    if "method" in message:
        method = message["method"]
        if not isinstance(method, str) or not method:
            raise BadMessage(INVALID_REQUEST, "method must be a non-empty string.", reply_id)
        params = message.get("params")
        if params is not None and not isinstance(params, (dict, list)):
            raise BadMessage(
                INVALID_REQUEST,
                f"params of {method} must be an object or an array, not {_kind(params)}.",
                reply_id,
            )
    elif not has_id or ("result" not in message and "error" not in message):
        raise BadMessage(
            INVALID_REQUEST,
            "A message needs a method (request, notification) or an id with a result or an "
            "error (response).",
            reply_id,
        )


async def read_messages(stop_event: Any, reader: Any, receive: Callable[[bytes], None],
                        refuse: Callable[[BadMessage], None] | None = None) -> None:
    """Read Content-Length frames and hand each body to ``receive`` (pygls' loop, unparsed).

    A body over ``MAX_MESSAGE_BYTES`` is skipped without being held and goes to ``refuse``.
    """
    content_length: int | None = None
    while not stop_event.is_set():
        header = await reader.readline()
        if not header:
            break
        match = _CONTENT_LENGTH.fullmatch(header)
        if match:
            content_length = int(match.group(1))
            continue
        if header.strip() or content_length is None:
            continue  # another header (Content-Type), or a stray blank line
        length, content_length = content_length, None
        try:
            body = await _read_body(reader, length)
        except asyncio.IncompleteReadError:
            break  # the client went away inside a body
        if body is None:
            bad = BadMessage(INVALID_REQUEST, f"The message is larger than this server takes "
                                              f"({MAX_MESSAGE_BYTES} bytes); it was dropped.")
            log.warning("%s", bad.message)
            if refuse is not None:
                refuse(bad)
            continue
        if length and not body:
            break  # end of input (stdin's read returns short instead of raising)
        receive(body)


async def _read_body(reader: Any, length: int) -> bytes | None:
    """The body, or None when it is over the limit (then read and dropped in pieces)."""
    if length <= MAX_MESSAGE_BYTES:
        return await reader.readexactly(length)
    while length:
        chunk = await reader.readexactly(min(length, _DISCARD_CHUNK))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", length)
        length -= len(chunk)
    return None
