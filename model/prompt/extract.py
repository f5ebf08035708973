"""Fenced code blocks in a model's reply: the one parser behind the editor's Fix edits
(``lsp_server.extract``) and the evaluation's program extraction
(``training.evaluation.extract``).

Replies are Markdown as small models write it, so the rules are CommonMark's, a little
more lenient: a fence is three or more backticks or tildes, indented or not, with an info
string whose first word is the language tag; the block ends at a line holding only the
same fence character, at least as many times; a reply that ends inside a block (the token
limit) still yields that block, marked as not closed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE_OPEN = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n]*)$")

#: Tags that mean an editor's language id (LSP ``languageId``); other ids match themselves.
LANGUAGE_TAGS: dict[str, frozenset[str]] = {
    "python": frozenset({"python", "py", "python3", "py3"}),
    "javascript": frozenset({"javascript", "js"}),
    "typescript": frozenset({"typescript", "ts"}),
    "shellscript": frozenset({"sh", "bash", "shell", "zsh"}),
    "cpp": frozenset({"cpp", "c++", "cc", "cxx"}),
    "rust": frozenset({"rust", "rs"}),
}


@dataclass(frozen=True)
class CodeBlock:
    language: str  # the info string's first word, lower-cased; "" when untagged
    code: str  # the lines between the fences as written, each with its newline
    closed: bool  # False when the reply ended inside the block


def code_blocks(text: str) -> list[CodeBlock]:
    """All fenced blocks of ``text`` in order, empty ones included."""
    blocks: list[CodeBlock] = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        match = _FENCE_OPEN.match(lines[i].rstrip("\r\n"))
        info = match.group("info").strip() if match else ""
        if not match or (match.group("fence")[0] == "`" and "`" in info):
            i += 1  # not a fence (a backtick fence's info string has no backticks)
            continue
        char, length = match.group("fence")[0], len(match.group("fence"))
        body: list[str] = []
        closed = False
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if len(stripped) >= length and stripped == char * len(stripped):
                closed = True
                break
            body.append(lines[i])
            i += 1
        language = info.split()[0].lower() if info else ""
        blocks.append(CodeBlock(language, "".join(body), closed))
        i += 1
    return blocks


def is_language(tag: str, language_id: str) -> bool:
    """Whether a block tagged ``tag`` holds code of ``language_id`` (untagged blocks do)."""
    return not tag or tag in LANGUAGE_TAGS.get(language_id, {language_id})
