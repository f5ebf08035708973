"""Checking command arguments: every problem becomes an InvalidParams error with a sentence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.workspace import TextDocument, Workspace

from .context import Selection, select


def invalid(message: str) -> JsonRpcInvalidParams:
    """An LSP InvalidParams error whose message is exactly ``message``."""
    return JsonRpcInvalidParams(message=message)


#: LSP's ``uinteger``/``integer`` bound: lines and characters above it are not positions.
MAX_POSITION = 2**31 - 1


def one_argument(command: str, arguments: Any) -> dict[str, Any]:
    """The single argument object of a command (none at all, or ``[]``, means ``{}``)."""
    if arguments is None or (isinstance(arguments, (list, tuple)) and not arguments):
        return {}
    if not isinstance(arguments, (list, tuple)) or len(arguments) != 1:
        raise invalid(f"Command {command} takes exactly one argument object.")
    if not isinstance(arguments[0], dict):
        raise invalid(f"The argument of {command} must be an object, not {_kind(arguments[0])}.")
    where = _not_unicode(arguments[0])
    if where is not None:
        raise invalid(
            f"{command}: {where} is not valid Unicode text (it holds a lone surrogate such "
            "as \\ud800)."
        )
    return arguments[0]


def _not_unicode(value: Any) -> str | None:
    """The path of the first string (key or value) that cannot be UTF-8, else None."""
    stack: list[tuple[str, Any]] = [("the argument", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if not is_unicode(item):
                return where
        elif isinstance(item, dict):
            for key, child in item.items():
                if not is_unicode(key):
                    return f"a key of {where}"
                stack.append((key if where == "the argument" else f"{where}.{key}", child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))
    return None


def is_unicode(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (JSON can carry lone surrogates; files cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


def optional_str(args: dict[str, Any], key: str, command: str) -> str | None:
    """A string field that may be absent or null."""
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise invalid(f"{command}: {key} must be a non-empty string, not {_kind(value)}.")
    return value


def required_str(args: dict[str, Any], key: str, command: str) -> str:
    """A string field that must be present."""
    value = optional_str(args, key, command)
    if value is None:
        raise invalid(f"{command} needs {key} (a string).")
    return value


def _position(value: Any, where: str, command: str) -> tuple[int, int]:
    if not isinstance(value, dict):
        raise invalid(f"{command}: {where} must be an object with line and character.")
    line, character = value.get("line"), value.get("character")
    for name, number in (("line", line), ("character", character)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise invalid(f"{command}: {where}.{name} must be a non-negative integer.")
        if number > MAX_POSITION:  # type: ignore[operator]  # an int, checked just above
            raise invalid(f"{command}: {where}.{name} must be at most {MAX_POSITION}.")
    return int(line), int(character)  # type: ignore[arg-type]  # checked just above


def parse_range(value: Any, command: str) -> types.Range:
    """An LSP range from a dict, with start before end."""
    if not isinstance(value, dict):
        raise invalid(f"{command}: range must be an object with start and end.")
    start = _position(value.get("start"), "range.start", command)
    end = _position(value.get("end"), "range.end", command)
    if end < start:
        raise invalid(f"{command}: range.end comes before range.start.")
    return types.Range(
        start=types.Position(line=start[0], character=start[1]),
        end=types.Position(line=end[0], character=end[1]),
    )


def open_document(workspace: Workspace, args: dict[str, Any], command: str) -> TextDocument:
    """The open document named by ``textDocument.uri``."""
    text_document = args.get("textDocument")
    if not isinstance(text_document, dict) or not isinstance(text_document.get("uri"), str):
        raise invalid(f"{command} needs textDocument: {{uri}}.")
    uri = text_document["uri"]
    if uri not in workspace.text_documents:
        raise invalid(f"Document {uri} is not open; the editor must send didOpen first.")
    return workspace.text_documents[uri]


def check_in_document(document: TextDocument, rng: types.Range, command: str) -> None:
    """Refuse a range that reaches outside the document."""
    lines = document.lines
    line_count = len(lines)
    for where, pos in (("start", rng.start), ("end", rng.end)):
        # One past the last line is the end of a document that ends with a newline.
        if pos.line > line_count or (pos.line == line_count and pos.character > 0):
            raise invalid(
                f"{command}: range.{where} line {pos.line} is outside the document "
                f"({line_count} lines)."
            )
        if pos.line < line_count:
            width = len(lines[pos.line].rstrip("\r\n").encode("utf-16-le")) // 2
            if pos.character > width:
                raise invalid(
                    f"{command}: range.{where} character {pos.character} is past the end "
                    f"of line {pos.line} ({width} characters)."
                )


@dataclass
class DocumentRange:
    """A checked (document, range) pair plus the selection text around it."""

    document: TextDocument
    range: types.Range
    version: int | None
    selection: Selection


def document_range(
    workspace: Workspace, args: dict[str, Any], command: str, surrounding: int, *, required: bool
) -> DocumentRange | None:
    """Check ``textDocument`` and ``range`` and cut the selection out of the document."""
    if args.get("textDocument") is None and not required:
        return None
    document = open_document(workspace, args, command)
    if args.get("range") is None:
        raise invalid(f"{command} needs a range.")
    rng = parse_range(args["range"], command)
    check_in_document(document, rng, command)
    if rng.start == rng.end and required:
        raise invalid(f"{command}: the range is empty; select some code first.")
    lines = list(document.lines)
    server_range = document.range_from_client_units(rng) if lines else None
    start = (server_range.start.line, server_range.start.character) if server_range else (0, 0)
    end = (server_range.end.line, server_range.end.character) if server_range else (0, 0)
    before, text, after = select(lines, start, end, surrounding) if lines else ("", "", "")
    if not all(is_unicode(part) for part in (before, text, after)):
        raise invalid(f"{command}: the document holds text that is not valid Unicode.")
    end_line = end[0] - 1 if end[1] == 0 and end[0] > start[0] else end[0]
    selection = Selection(
        path=document.path or document.uri,
        language_id=document.language_id or "text",
        start_line=start[0],
        end_line=min(end_line, max(0, len(lines) - 1)),
        text=text,
        before=before,
        after=after,
    )
    return DocumentRange(document, rng, document.version, selection)


def parse_diagnostics(value: Any, command: str) -> list[dict[str, Any]]:
    """Diagnostics as plain dicts (each needs a message)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(d, dict) and isinstance(d.get("message"), str) for d in value
    ):
        raise invalid(f"{command}: diagnostics must be an array of objects with a message.")
    return value
