"""Pull runnable code out of a model's reply (fenced blocks, bare code, raw completions)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# An opening fence (``` or ~~~, optional language tag) up to the matching closing fence,
# or to the end of the text when the model ran out of tokens inside the block.
FENCE = re.compile(
    r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+#.-]*)[^\n]*\n(?P<code>.*?)(?:^[ \t]*(?P=fence)[ \t]*$|\Z)",
    re.DOTALL | re.MULTILINE,
)
PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
# The stop sequences of the Codex paper: a completion ends where top-level code starts.
COMPLETION_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")
CODE_START = re.compile(r"^(?:def |class |import |from |@|async def )", re.MULTILINE)


@dataclass
class CodeBlock:
    language: str
    code: str
    closed: bool


def code_blocks(text: str) -> list[CodeBlock]:
    """All fenced code blocks in `text`, in order; an unclosed final block is included."""
    blocks = []
    for match in FENCE.finditer(text):
        closed = match.end() < len(text) or text.rstrip().endswith(match.group("fence"))
        code = match.group("code")
        if not closed:
            code = code.rstrip()
        blocks.append(CodeBlock(match.group("lang").lower(), code.rstrip() + "\n", closed))
    return [b for b in blocks if b.code.strip()]


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
    blocks = [b for b in code_blocks(text) if b.language in PYTHON_TAGS]
    if blocks:
        if entry_point:
            pattern = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
            defining = [b for b in blocks if pattern.search(b.code)]
            if defining:
                return defining[0].code
        return max(blocks, key=lambda b: len(b.code)).code
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
