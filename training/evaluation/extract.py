"""Pull runnable code out of a model's reply (fenced blocks, bare code, raw completions).

The fences are parsed by ``model.prompt.extract`` (shared with the language server's edits).
"""

from __future__ import annotations

import ast
import re

from model.prompt.extract import LANGUAGE_TAGS, CodeBlock, code_blocks

__all__ = ["PYTHON_TAGS", "COMPLETION_STOPS", "CodeBlock", "code_blocks", "defines", "extract_python",
           "parses", "truncate_completion"]

PYTHON_TAGS = frozenset({""}) | LANGUAGE_TAGS["python"]  # untagged blocks count as python
# The stop sequences of the Codex paper: a completion ends where top-level code starts.
COMPLETION_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")
CODE_START = re.compile(r"^(?:def |class |import |from |@|async def )", re.MULTILINE)


def parses(code: str) -> bool:
    """Whether `code` is syntactically valid Python."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def extract_python(text: str, entry_point: str | None = None) -> str | None:
    """The Python code the reply offers, or None when it offers none.

    Prefers fenced python (or untagged) blocks; among them the first that defines
    `entry_point` when one is given, else the longest. Without fences, the reply itself
    when it parses, else the part from the first `def`/`import` line on.
    """
    blocks = [b.code.rstrip() + "\n" for b in code_blocks(text)
              if b.language in PYTHON_TAGS and b.code.strip()]
    if blocks:
        if entry_point:
            pattern = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
            defining = [code for code in blocks if pattern.search(code)]
            if defining:
                return defining[0]
        return max(blocks, key=len)
    if "```" in text or "~~~" in text:
        return None  # fenced, but only in other languages
    stripped = text.strip("\n")
    if stripped and parses(stripped) and CODE_START.search(stripped):
        return stripped + "\n"
    start = CODE_START.search(text)
    if start:
        tail = text[start.start():].rstrip() + "\n"
        # Drop trailing prose line by line until what is left parses.
        lines = tail.splitlines()
        while lines and not parses("\n".join(lines)):
            lines.pop()
        if lines:
            return "\n".join(lines) + "\n"
    return None


def truncate_completion(completion: str) -> str:
    """Cut a raw (base-model) completion where the function body ends."""
    cut = len(completion)
    for stop in COMPLETION_STOPS:
        index = completion.find(stop)
        if index != -1:
            cut = min(cut, index)
    return completion[:cut]


def defines(code: str, name: str) -> bool:
    """Whether `code` defines a top-level function `name`."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return bool(re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE))
    return any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name
        for node in tree.body
    )
