"""Training examples from the editor's feedback log (``starchat adapt --feedback``).

The language server logs, while the user's setting ``starchat.feedback.enabled`` is on, what
the user kept of the model's work (``model.runtime.feedback_log`` has the file and the rows).
Each row becomes an example in the shape the model was asked in, with the chat recipe's
masking (``training.tokenize``): labels are -100 on everything the model is given and the
real ids only on what it must produce.

- **completion** (an accepted inline completion): the prompt is built by
  ``model.prompt.fim.build_fim_prompt`` from the row's prefix, suffix and path, exactly as
  the editor's request is built (the model's FIM format, or a prefix-only continuation); the
  target is the accepted text. A prefix-only prompt has its last token taken off for token
  healing (``FimPrompt.heal``): that text goes back in front of the target, so prompt plus
  target spell the file as it now is.
- **edit** (an applied Fix or Add docstring) and **chat** (a conversation turn): the
  dialogue, tokenized by ``tokenize_dialogue`` (assistant turns labelled). Chat rows of one
  conversation grow turn by turn, so only its last row is used: each reply is learnt once.

Only rows of the given workspace are read; a bad line is skipped (the reader says so).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from model.prompt.chat_format import encode_text
from model.prompt.fim import DEFAULT_CONTEXT_TOKENS, MIN_CONTEXT_TOKENS, build_fim_prompt
from model.runtime.feedback_log import log_path, read_rows

from .tokenize import IGNORE_INDEX, has_labels, tokenize_dialogue

log = logging.getLogger(__name__)


def completion_example(tokenizer: Any, row: dict, max_length: int) -> dict | None:
    """The example of one accepted completion; None when it cannot be built (no text before
    the cursor, no room in ``max_length``)."""
    text = row["completion"]
    keep = max_length - MIN_CONTEXT_TOKENS - 1  # the most target tokens that leave a window
    if keep < 1 or not text:
        return None
    wanted = min(len(encode_text(tokenizer, text)), keep)
    # One token of room for the healed piece, which moves from the prompt to the target.
    window = min(DEFAULT_CONTEXT_TOKENS, max_length - wanted - 1)
    try:
        prompt = build_fim_prompt(tokenizer, {"prefix": row["prefix"], "suffix": row["suffix"],
                                              "path": row["path"], "context_tokens": window})
    except ValueError as exc:  # e.g. nothing before the cursor
        log.info("a feedback completion left out: %s", exc)
        return None
    target = encode_text(tokenizer, prompt.heal + text)[: max_length - len(prompt.ids)]
    if not target:
        return None
    return {"input_ids": prompt.ids + target, "labels": [IGNORE_INDEX] * len(prompt.ids) + target}


def _last_of_each_conversation(rows: Iterable[dict]) -> list[dict]:
    last: dict[str, dict] = {}
    for row in rows:  # oldest first: a later row of a conversation holds the earlier turns
        last.pop(row["conversation"], None)
        last[row["conversation"]] = row
    return list(last.values())


def feedback_examples(tokenizer: Any, max_length: int, workspace: Path) -> list[dict]:
    """``{"input_ids", "labels"}`` examples from the feedback log of ``workspace``, in log order
    (completions, then edits, then conversations)."""
    rows = read_rows(log_path(workspace), workspace).rows
    by_kind: dict[str, list[dict]] = {"completion": [], "edit": [], "chat": []}
    for row in rows:
        by_kind[row["kind"]].append(row)
    examples = [e for e in (completion_example(tokenizer, r, max_length) for r in by_kind["completion"]) if e]
    dialogues = by_kind["edit"] + _last_of_each_conversation(by_kind["chat"])
    if dialogues and not getattr(tokenizer, "chat_template", None):
        log.warning("the model has no chat template: %d feedback dialogue(s) left out", len(dialogues))
        dialogues = []
    for row in dialogues:
        example = tokenize_dialogue(tokenizer, row["messages"], max_length)
        if has_labels(example):
            examples.append(example)
    log.info("feedback log of %s: %d rows -> %d examples", workspace, len(rows), len(examples))
    return examples
