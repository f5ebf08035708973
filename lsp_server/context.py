"""Editor context -> the structured worker request (system, history, user_parts).

The worker fits the parts into the model's context window with the real tokenizer: older
turns and surrounding lines go first, the selection last, and it reports what it cut.
Here we only decide *what* goes in and in which order. Text from files stays data: the
worker tokenizes content so that control-token strings inside it stay plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: What each task asks of the model; the code itself follows in the selection part.
# Small models follow an instruction that comes before the code much better than one after
# it (measured on the embedded 135M model: instruction-last answers with prose, no code).
INSTRUCTIONS = {
    "explain": "Explain what this {language} code does, step by step, and point out any bugs.",
    "fix": (
        "Fix the bug in this {language} code and return the corrected code in a "
        "```{language} code block."
    ),
    "writeTests": "Write unit tests for this {language} code in a ```{language} code block.",
    "addDocstring": (
        "Add a docstring to this {language} code and return the whole code, otherwise "
        "unchanged, in a ```{language} code block."
    ),
}


@dataclass(frozen=True)
class Selection:
    """A slice of a document: where it is and the text around it."""

    path: str
    language_id: str
    start_line: int  # 0-based
    end_line: int  # 0-based, inclusive
    text: str
    before: str
    after: str


def fence_for(text: str) -> str:
    """A backtick fence longer than any backtick run inside ``text``."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def fenced(text: str, language_id: str) -> str:
    """``text`` as a fenced block tagged with the language."""
    fence = fence_for(text)
    body = text if text.endswith("\n") else text + "\n"
    return f"{fence}{language_id}\n{body}{fence}\n"


def select(
    lines: list[str], start: tuple[int, int], end: tuple[int, int], surrounding: int
) -> tuple[str, str, str]:
    """Split a document into (before, selection, after); before/after are whole lines.

    ``start``/``end`` are (line, character) in Python string units; ``lines`` keep their
    line endings, as pygls gives them.
    """
    (sl, sc), (el, ec) = start, end
    if el >= len(lines):
        el, ec = len(lines) - 1, len(lines[-1]) if lines else 0
    if sl == el:
        text = lines[sl][sc:ec] if lines else ""
    else:
        text = lines[sl][sc:] + "".join(lines[sl + 1 : el]) + lines[el][:ec]
    before = "".join(lines[max(0, sl - surrounding) : sl])
    # An end at column 0 means the selection stopped at the end of the line above.
    after_from = el if ec == 0 and el > sl else el + 1
    after = "".join(lines[after_from : after_from + surrounding])
    return before, text, after


def format_diagnostics(diagnostics: list[dict[str, Any]], first_line: int, limit: int) -> str:
    """Diagnostics as plain lines, numbered like the editor shows them (1-based)."""
    rows = []
    for diag in diagnostics[:limit]:
        line = diag.get("range", {}).get("start", {}).get("line", first_line) + 1
        source = f"{diag['source']}: " if diag.get("source") else ""
        code = f" [{diag['code']}]" if diag.get("code") not in (None, "") else ""
        rows.append(f"- line {line}: {source}{diag.get('message', '')}{code}")
    return "\n".join(rows)


def _surrounding(label: str, code: str, language_id: str) -> list[dict[str, str]]:
    # Fences live in their own text parts: the budget trims the surrounding part line by
    # line, and must never cut a fence away from its partner.
    fence = fence_for(code)
    body = code if code.endswith("\n") else code + "\n"
    return [
        {"kind": "text", "text": f"{label}:\n{fence}{language_id}\n"},
        {"kind": "surrounding", "text": body},
        {"kind": "text", "text": f"{fence}\n\n"},
    ]


def build_user_parts(
    task: str,
    selection: Selection | None,
    *,
    message: str | None = None,
    diagnostics: list[dict[str, Any]] | None = None,
    max_diagnostics: int = 20,
) -> list[dict[str, str]]:
    """The user turn as ordered parts of kinds ``text``, ``surrounding`` and ``selection``.

    The worker joins the parts with nothing in between, so each carries its own newlines.
    """
    parts: list[dict[str, str]] = []
    if task == "chat":
        instruction = message or ""
    else:
        language = selection.language_id if selection else "text"
        instruction = INSTRUCTIONS[task].format(language=language)
        if message:
            instruction = f"{instruction}\n{message}"
    if selection is None:
        return [{"kind": "text", "text": instruction}]
    lang = selection.language_id
    lines = f"lines {selection.start_line + 1}-{selection.end_line + 1}"
    # Context first, then the instruction, then the code: the 135M model echoes whatever
    # text comes after the code instead of answering.
    parts.append(
        {"kind": "text", "text": f"File {selection.path} (language: {lang}), {lines}.\n\n"}
    )
    if selection.before.strip():
        parts += _surrounding("Lines before the code", selection.before, lang)
    if selection.after.strip():
        parts += _surrounding("Lines after the code", selection.after, lang)
    if diagnostics:
        parts.append(
            {
                "kind": "text",
                "text": "Diagnostics in the code:\n"
                + format_diagnostics(diagnostics, selection.start_line, max_diagnostics)
                + "\n\n",
            }
        )
    if task == "chat":
        parts.append({"kind": "selection", "text": fenced(selection.text, lang) + "\n"})
        parts.append({"kind": "text", "text": instruction})
    else:
        parts.append({"kind": "text", "text": instruction + "\n\n"})
        parts.append({"kind": "selection", "text": fenced(selection.text, lang).rstrip("\n")})
    return parts


def flatten(parts: list[dict[str, str]]) -> str:
    """The user turn as one text, exactly as the worker joins it (and as history stores it)."""
    return "".join(part["text"] for part in parts)


def build_request(
    system: str,
    history: list[dict[str, str]],
    parts: list[dict[str, str]],
    params: dict[str, Any],
) -> dict[str, Any]:
    """The structured request of ``model.serving.client`` (fitted by the worker's budget)."""
    return {"system": system, "history": history, "user_parts": parts, "params": params}
