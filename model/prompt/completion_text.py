"""What a typist expects of a completion: post-processing steps and a prefix-keyed cache.

Each step is a small pure function of the model's text and the text around the cursor (as
Tabby's agent does it), so each can be tested alone. :func:`postprocess` runs them in order:

- mid-line (code left of the cursor): the completion ends at the end of the line;
- at the start of an empty line: up to one block, ending at a dedent below the cursor's
  indentation or at a blank line after code;
- text that repeats what is right of the cursor, or the next lines of the suffix, is cut;
- trailing whitespace goes; nothing left means no suggestion.

:class:`CompletionCache` remembers recent suggestions per document: when the user types a
suggestion's first characters, or comes back to where it was made, it is served without a
model call.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cursor:
    """The text around the cursor: before it on its line, after it on its line, and after."""

    line_prefix: str
    line_suffix: str
    next_lines: tuple[str, ...] = ()

    @classmethod
    def at(cls, prefix: str, suffix: str) -> Cursor:
        """The cursor between ``prefix`` and ``suffix``, with the suffix's next five lines."""
        return cls(prefix.rsplit("\n", 1)[-1], suffix.split("\n", 1)[0], tuple(suffix.split("\n")[1:6]))

    @property
    def block_mode(self) -> bool:
        """At the start of an empty (or whitespace-only) line: complete a block."""
        return not self.line_prefix.strip() and not self.line_suffix.strip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def to_end_of_line(text: str) -> str:
    """Only the rest of the current line."""
    return text.split("\n", 1)[0]


def one_block(text: str, line_prefix: str) -> str:
    """Up to one block: stop at a dedent below the cursor's line, or a blank line after code."""
    lines = text.split("\n")
    base = _indent(line_prefix + lines[0]) if lines[0].strip() else len(line_prefix)
    kept = [lines[0]]
    seen_code = bool(lines[0].strip())
    for line in lines[1:]:
        if not line.strip():
            if seen_code:
                break
            kept.append(line)
            continue
        if _indent(line) < base:
            break
        kept.append(line)
        seen_code = True
    return "\n".join(kept)


def trim_line_suffix(text: str, line_suffix: str) -> str:
    """Drop the end of a one-line completion that repeats the text right of the cursor."""
    right = line_suffix.rstrip()
    if not right or "\n" in text:
        return text
    body = text.rstrip()
    for k in range(min(len(right), len(body)), 0, -1):
        if body.endswith(right[:k]):
            return body[:-k]
    return text


def drop_suffix_lines(text: str, next_lines: tuple[str, ...]) -> str:
    """Cut a multi-line completion where it starts repeating the lines after the cursor."""
    following = [line.strip() for line in next_lines if line.strip()]
    if not following or "\n" not in text:
        return text
    lines = text.split("\n")
    for i in range(1, len(lines)):
        if lines[i].strip() and lines[i].strip() == following[0]:
            return "\n".join(lines[:i])
    return text


def postprocess(text: str, cursor: Cursor) -> str | None:
    """The model's raw text -> what to show, or None when nothing useful is left."""
    if cursor.block_mode:
        text = one_block(text, cursor.line_prefix)
        text = drop_suffix_lines(text, cursor.next_lines)
    else:
        text = to_end_of_line(text)
        text = trim_line_suffix(text, cursor.line_suffix)
    text = "\n".join(line.rstrip() for line in text.split("\n")).rstrip()
    return text if text.strip() else None


@dataclass
class _Entry:
    prefix: str
    suffix: str
    text: str


class CompletionCache:
    """Recent suggestions per document, keyed by the text before and after the cursor.

    ``get`` serves a suggestion again at its own position (the cursor came back: an undo, a
    backspace) and the rest of one whose first characters the user typed. ``typed_through``
    finds the one the user has just typed or accepted to its end: what comes next is the
    completion worth fetching before it is asked for (``features/completion.py``).
    """

    def __init__(self, max_documents: int = 64, per_document: int = 8) -> None:
        self._entries: dict[str, list[_Entry]] = {}
        self._max = max_documents
        self._per_document = per_document

    def put(self, uri: str, prefix: str, suffix: str, text: str) -> None:
        entries = [e for e in self._entries.pop(uri, []) if (e.prefix, e.suffix) != (prefix, suffix)]
        self._entries[uri] = [_Entry(prefix, suffix, text), *entries][: self._per_document]
        while len(self._entries) > self._max:
            self._entries.pop(next(iter(self._entries)))

    def get(self, uri: str, prefix: str, suffix: str) -> str | None:
        """The rest of a suggestion whose position the cursor is at or past by the
        suggestion's own first characters (the newest such suggestion)."""
        for entry in self._entries.get(uri, ()):
            if suffix != entry.suffix or not prefix.startswith(entry.prefix):
                continue
            typed = prefix[len(entry.prefix) :]
            if len(typed) < len(entry.text) and entry.text.startswith(typed):
                return entry.text[len(typed) :]
        return None

    def typed_through(self, uri: str, prefix: str, suffix: str) -> bool:
        """Whether the text before and after the cursor is a suggestion put in whole."""
        return any(
            len(prefix) == len(e.prefix) + len(e.text)  # checked first: this runs on every keystroke
            and suffix == e.suffix
            and prefix.startswith(e.prefix)
            and prefix.endswith(e.text)
            for e in self._entries.get(uri, ())
        )

    def forget(self, uri: str) -> None:
        self._entries.pop(uri, None)
