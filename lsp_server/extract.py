"""Pull the code out of a model answer and shape it to replace the user's selection.

The fences are parsed by ``model.prompt.extract`` (shared with the evaluation).
"""

from __future__ import annotations

import ast
import textwrap

from model.prompt.extract import code_blocks, is_language


def extract_code(reply: str, language_id: str) -> str | None:
    """The code of the first non-empty block in the document's language (or untagged), else None."""
    blocks = [b.code for b in code_blocks(reply) if is_language(b.language, language_id) and b.code.strip()]
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
