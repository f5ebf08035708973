"""Fit a request into the model's context window, cutting the least useful text first.

The prompt is system + earlier turns + a final user turn made of parts:
``text`` (always kept: the question, file path, diagnostics), ``surrounding`` (lines around
the selection) and ``selection``. Counted with the model's own tokenizer against
``context_window - max_new_tokens``. When it does not fit, cuts go in this order:
1. the oldest earlier turns (a user turn and its answer together);
2. surrounding lines, farthest from the selection first;
3. the middle of the selection, keeping its first and last lines.
Every cut is reported in ``truncated`` so the user can see what the model did not see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .chat_format import ChatFormat

PART_KINDS = ("text", "surrounding", "selection")


class BudgetError(ValueError):
    """The request cannot fit even with every optional part cut."""


@dataclass
class Fitted:
    messages: list[dict]
    prompt_ids: list[int]
    truncated: list[str] = field(default_factory=list)


def _largest(lo: int, hi: int, fits: Callable[[int], bool]) -> int:
    """The largest n in [lo, hi] with fits(n), assuming fits is monotone; lo-1 if none."""
    best = lo - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def _elide_middle(text: str, keep_lines: int) -> str:
    lines = text.splitlines(keepends=True)
    if keep_lines >= len(lines):
        return text
    head = lines[: (keep_lines + 1) // 2]
    tail = lines[len(lines) - keep_lines // 2 :] if keep_lines // 2 else []
    cut = len(lines) - len(head) - len(tail)
    marker = f"… [{cut} lines omitted to fit the context window] …\n"
    return "".join(head) + marker + "".join(tail)


def _elide_chars(text: str, keep: int) -> str:
    if keep >= len(text):
        return text
    return text[: keep // 2] + "\n… [text omitted to fit the context window] …\n" + text[len(text) - keep // 2 :]


def fit(
    chat_format: ChatFormat,
    limit: int,
    *,
    system: str | None = None,
    history: Sequence[dict] = (),
    user_parts: Sequence[dict] = (),
) -> Fitted:
    """Build messages that fit in ``limit`` prompt tokens; see the module docstring."""
    for part in user_parts:
        if part.get("kind", "text") not in PART_KINDS:
            raise ValueError(f"Unknown context part kind {part.get('kind')!r}.")
    parts = [dict(kind=p.get("kind", "text"), text=str(p.get("text", ""))) for p in user_parts]
    history = list(dict(m) for m in history)
    truncated: list[str] = []
    head = [{"role": "system", "content": system}] if system else []

    def build(hist: Sequence[dict], ps: Sequence[dict]) -> list[dict]:
        msgs = head + list(hist)
        if ps:
            msgs.append({"role": "user", "content": "".join(p["text"] for p in ps)})
        return msgs

    def ids_for(hist: Sequence[dict], ps: Sequence[dict]) -> list[int]:
        return chat_format.encode(build(hist, ps))

    ids = ids_for(history, parts)
    if len(ids) <= limit:
        return Fitted(build(history, parts), ids, truncated)

    # 1. oldest turns first; the newest user message of a bare conversation stays.
    keep_last = 0 if parts else 1
    droppable = max(0, len(history) - keep_last)
    dropped = 0
    while dropped < droppable and len(ids_for(history[dropped:], parts)) > limit:
        dropped += 2 if history[dropped]["role"] == "user" and dropped + 1 < droppable else 1
    dropped = min(dropped, droppable)
    if dropped:
        history = history[dropped:]
        truncated.append(f"{dropped} earlier message{'s' if dropped != 1 else ''} of the conversation")
    if len(ids_for(history, parts)) <= limit:
        return Fitted(build(history, parts), ids_for(history, parts), truncated)

    # 2. surrounding lines, farthest from the selection first, evenly on both sides.
    sel_index = next((i for i, p in enumerate(parts) if p["kind"] == "selection"), len(parts))
    around = [i for i, p in enumerate(parts) if p["kind"] == "surrounding"]
    if around:
        lines = {i: parts[i]["text"].splitlines(keepends=True) for i in around}

        def trimmed(n: int) -> list[dict]:
            out = list(parts)
            for i in around:
                ls = lines[i]
                kept = (ls[len(ls) - n :] if i < sel_index else ls[:n]) if n else []
                out[i] = dict(parts[i], text="".join(kept))
            return out

        most = max(len(v) for v in lines.values())
        keep = max(0, _largest(0, most, lambda n: len(ids_for(history, trimmed(n))) <= limit))
        parts = trimmed(keep)
        total = sum(len(v) for v in lines.values())
        kept = sum(min(keep, len(v)) for v in lines.values())
        truncated.append(f"surrounding lines ({kept} of {total} kept)")
    if len(ids_for(history, parts)) <= limit:
        return Fitted(build(history, parts), ids_for(history, parts), truncated)

    # 3. the middle of the selection (or of the last user message), by lines then characters.
    if sel_index == len(parts) and not parts and history and history[-1]["role"] == "user":
        target_text, replace = history[-1]["content"], "history"
    elif sel_index < len(parts):
        target_text, replace = parts[sel_index]["text"], "selection"
    else:
        raise BudgetError("The request does not fit in the model's context window.")

    def with_text(text: str) -> list[int]:
        if replace == "history":
            return ids_for([*history[:-1], dict(history[-1], content=text)], parts)
        return ids_for(history, parts[:sel_index] + [dict(parts[sel_index], text=text)] + parts[sel_index + 1 :])

    n_lines = len(target_text.splitlines())
    keep = _largest(2, n_lines - 1, lambda n: len(with_text(_elide_middle(target_text, n))) <= limit)
    if keep >= 2:
        new_text = _elide_middle(target_text, keep)
        truncated.append(f"the middle of the {replace if replace == 'selection' else 'message'} ({n_lines - keep} of {n_lines} lines)")
    else:
        chars = _largest(1, len(target_text) - 1, lambda n: len(with_text(_elide_chars(target_text, n))) <= limit)
        if chars < 1:
            raise BudgetError(
                "The request does not fit in the model's context window even with the "
                "conversation, surrounding lines and selection cut; raise the context window "
                "or lower max_new_tokens."
            )
        new_text = _elide_chars(target_text, chars)
        truncated.append(f"most of the {replace if replace == 'selection' else 'message'} ({len(target_text) - chars} characters)")
    if replace == "history":
        history = [*history[:-1], dict(history[-1], content=new_text)]
    else:
        parts[sel_index] = dict(parts[sel_index], text=new_text)
    return Fitted(build(history, parts), ids_for(history, parts), truncated)


def check_messages(value: object, name: str) -> list[dict]:
    """Validate a list of chat messages from a client; ValueError names the bad one."""
    if not isinstance(value, list):
        raise ValueError(f"'{name}' must be a list of messages.")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise ValueError(f"{name}[{i}] must be a map with role system/user/assistant and string content.")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def fit_request(chat_format: ChatFormat, limit: int, request: dict) -> Fitted:
    """Validate a client request (``messages``, or ``system``/``history``/``user_parts``) and fit it."""
    if "messages" in request:
        messages = check_messages(request["messages"], "messages")
        if not messages or messages[-1]["role"] != "user":
            raise ValueError("The conversation must end with a user message.")
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        history = messages[1:] if system is not None else messages
        return fit(chat_format, limit, system=system, history=history)
    parts = request.get("user_parts")
    if not isinstance(parts, list) or not parts or not all(
        isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts
    ):
        raise ValueError("A request needs 'messages' or a non-empty list of 'user_parts' with text.")
    system = request.get("system")
    if system is not None and not isinstance(system, str):
        raise ValueError("'system' must be a string.")
    history = check_messages(request.get("history") or [], "history")
    # user_parts carry their own separators, so concatenation in order is the user turn.
    return fit(chat_format, limit, system=system, history=history, user_parts=parts)
