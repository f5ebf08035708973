"""Pull the code out of a model answer and shape it to replace the user's selection."""

from __future__ import annotations

import ast
import re
import textwrap

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")

# Info strings that mean the same language as the editor's language id.
_ALIASES = {
    "python": {"python", "py", "python3", "py3"},
    "javascript": {"javascript", "js"},
    "typescript": {"typescript", "ts"},
    "shellscript": {"sh", "bash", "shell", "zsh"},
    "cpp": {"cpp", "c++", "cc", "cxx"},
    "rust": {"rust", "rs"},
}


def code_blocks(reply: str) -> list[tuple[str, str]]:
    """All fenced blocks of ``reply`` as (info, code). An unclosed last block counts."""
    blocks: list[tuple[str, str]] = []
    lines = reply.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        match = _FENCE_OPEN.match(lines[i].rstrip("\r\n"))
        if not match:
            i += 1
            continue
        fence, info = match.group("fence"), match.group("info").strip().split(" ")[0]
        body: list[str] = []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            body.append(lines[i])
            i += 1
        blocks.append((info.lower(), "".join(body)))
        i += 1
    return blocks


def _matches(info: str, language_id: str) -> bool:
    return not info or info in _ALIASES.get(language_id, {language_id})


def extract_code(reply: str, language_id: str) -> str | None:
    """The code of the first block in the document's language (or untagged), else None."""
    blocks = [code for info, code in code_blocks(reply) if _matches(info, language_id)]
    blocks = [code for code in blocks if code.strip()]
    return blocks[0] if blocks else None


def fit_to_selection(code: str, original: str) -> str:
    """Re-indent ``code`` to the selection's indentation; keep the selection's blank edges.

    Blank lines a user selected around a function separate it from its neighbours; the
    model's code block never has them, so they are carried over rather than deleted.
    """
    first = next((line for line in original.splitlines() if line.strip()), "")
    indent = first[: len(first) - len(first.lstrip())]
    body = textwrap.dedent(code)
    # A selection starting mid-line keeps its first line's indent from the document.
    starts_at_line_start = original[: len(original) - len(original.lstrip(" \t"))] == indent
    if indent and starts_at_line_start:
        body = textwrap.indent(body, indent)
    body = body.strip("\n")
    stripped = original.strip("\n")
    lead = original[: len(original) - len(original.lstrip("\n"))] if stripped else ""
    tail = original[len(original.rstrip("\n")) :] if stripped else original
    return lead + body + tail


def parses(code: str, language_id: str) -> bool:
    """False when ``code`` is Python that does not parse; other languages are trusted."""
    if language_id != "python":
        return True
    try:
        ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return False
    return True
