"""Training examples from a repository's files, in the model's own completion format.

The editor asks a model for code in one of two shapes (``model.prompt.fim``), and the
examples take the same shapes, so what is learnt is what the editor asks for:

- **next-span** (every model; the only shape for models without FIM tokens, such as the
  embedded SmolLM2): a file is tokenized whole and cut into spans of ``span`` tokens; each
  example is up to ``context`` tokens of the file before the span (the prompt; a sixteenth
  of the row by default), then the span. Every token of a file is a target exactly once,
  with the text before it as context.
- **fill-in-the-middle** (models with FIM tokens, ``fim_rate`` of the examples): one to
  three whole lines of a window are the middle; the prompt is built by
  ``model.prompt.fim.build_fim_prompt`` from the text before and after them, exactly as the
  editor's completion request builds it (the family's sentinels as tokens, the file's path
  in repository-format families), and the middle is followed by the family's end token.

Masking is the chat recipe's (``training.tokenize``): labels are -100 on the prompt, so the
loss counts only what the model must produce. File text is tokenized as data
(``model.prompt.chat_format.encode_text``): a file that contains ``<fim_middle>`` as text
cannot write a sentinel.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from model.prompt.chat_format import encode_text
from model.prompt.fim import build_fim_prompt, detect_template, resolve_template

from ..tokenize import IGNORE_INDEX
from .walk import RepoFile

MAX_LENGTH = 512
# A sixteenth of a next-span row is the prompt (32 of 512 tokens), the rest target: in the CPU
# recipe's 100 steps a quarter (128 tokens) left a fifth of the files unseen (docs/adapt.md).
CONTEXT_SHARE = 16
FIM_RATE = 0.5
FIM_MAX_LINES = 3


def next_span_examples(ids: Sequence[int], max_length: int = MAX_LENGTH, context: int | None = None) -> list[dict]:
    """Examples covering every token of ``ids`` once as a target, each after up to
    ``context`` tokens of what precedes it."""
    context = max_length // CONTEXT_SHARE if context is None else context
    if not 0 <= context < max_length:
        raise ValueError("context must be smaller than max_length.")
    span = max_length - context
    out = []
    for start in range(0, len(ids), span):
        before = list(ids[max(0, start - context) : start])
        target = list(ids[start : start + span])
        if len(before) + len(target) < 2:
            continue
        out.append({"input_ids": before + target, "labels": [IGNORE_INDEX] * len(before) + target})
    return out


def fim_example(tokenizer: Any, template: str, path: str, prefix: str, middle: str, suffix: str,
                end_id: int, max_length: int = MAX_LENGTH) -> dict | None:
    """One fill-in-the-middle example as the editor would prompt for it; None if it does not fit."""
    target = encode_text(tokenizer, middle) + [end_id]
    room = max_length - len(target)
    if room < 16 or len(target) < 2:
        return None
    prompt = build_fim_prompt(tokenizer, {"prefix": prefix, "suffix": suffix, "path": path,
                                          "template": template, "context_tokens": room})
    return {"input_ids": prompt.ids + target, "labels": [IGNORE_INDEX] * len(prompt.ids) + target}


def _fim_examples(tokenizer: Any, template: str, file: RepoFile, rng: random.Random, count: int,
                  end_id: int, max_length: int) -> list[dict]:
    lines = file.text.split("\n")
    candidates = [i for i, line in enumerate(lines) if line.strip()]
    out: list[dict] = []
    for _ in range(count):
        if not candidates:
            break
        first = rng.choice(candidates)
        last = min(len(lines), first + rng.randint(1, FIM_MAX_LINES))
        prefix = "\n".join(lines[:first]) + ("\n" if first else "")
        middle = "\n".join(lines[first:last]) + ("\n" if last < len(lines) else "")
        suffix = "\n".join(lines[last:])
        example = fim_example(tokenizer, template, file.path, prefix, middle, suffix, end_id, max_length)
        if example is not None:
            out.append(example)
    return out


def fim_end_id(tokenizer: Any, template: str) -> int:
    """The token a FIM middle ends with: the family's first end token, else end-of-sequence."""
    vocab = tokenizer.get_vocab()
    for token in resolve_template(tokenizer, template).stops:
        if token in vocab:
            return vocab[token]
    return int(tokenizer.eos_token_id)


def code_examples(tokenizer: Any, files: Iterable[RepoFile], *, max_length: int = MAX_LENGTH,
                  context: int | None = None, fim_rate: float = FIM_RATE, seed: int = 0,
                  template: str = "auto") -> list[dict]:
    """Next-span examples of every file, plus fill-in-the-middle ones where the model has
    FIM tokens (``fim_rate`` of the total), in a seeded shuffled order."""
    family = detect_template(tokenizer) if template == "auto" else template
    rng = random.Random(seed)
    end_id = fim_end_id(tokenizer, family) if family != "none" else -1
    examples: list[dict] = []
    for file in files:
        spans = next_span_examples(encode_text(tokenizer, file.text), max_length, context)
        examples += spans
        if family != "none" and fim_rate > 0:
            count = round(len(spans) * fim_rate / (1 - fim_rate)) if fim_rate < 1 else len(spans)
            examples += _fim_examples(tokenizer, family, file, rng, max(1, count), end_id, max_length)
    rng.shuffle(examples)
    return examples


def target_tokens(examples: Iterable[dict]) -> int:
    """How many tokens the examples train (labels that are not -100)."""
    return sum(sum(1 for t in e["labels"] if t != IGNORE_INDEX) for e in examples)
