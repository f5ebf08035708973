"""Chat tokens and dialogue tokenization with assistant-only labels.

A dialogue is rendered with the tokenizer's chat template (or StarChat's) with placeholders
where message contents go. The markup between contents is tokenized with special tokens
recognised; every content is tokenized as data (``model.prompt.chat_format.encode_text``), so a
literal ``<|end|>`` typed by a user stays text. Labels are built segment by segment: only
assistant contents and the end-of-turn token right after them are labelled; system and user
turns, role headers and padding are -100. This is the same token sequence the server sends
at inference (``model.prompt.chat_format.ChatFormat.encode``), so training and serving agree.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

from model.prompt.chat_format import (
    STARCHAT_TEMPLATE,
    STARCHAT_TOKENS,
    chat_format_for,
    encode_markup,
    encode_text,
)

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
# Private-use characters never appear in real dialogues, so they mark content positions.
_PLACEHOLDER = "\ue010{}\ue011"
_PLACEHOLDER_RE = re.compile("\ue010(\\d+)\ue011")


def add_chat_tokens(tokenizer: Any, model: Any = None, *, force_template: bool = False) -> Any:
    """Add the four StarChat tokens as special tokens and the StarChat chat template.

    Each token gets exactly one id. A tokenizer that already has a ``chat_template`` keeps
    it unless ``force_template``. When ``model`` is given its embeddings are resized to the
    new vocabulary (new rows start at the mean of the old ones; under ZeRO-3 transformers
    gathers the sharded matrix for this). Returns the tokenizer.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in STARCHAT_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    for token in STARCHAT_TOKENS:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"{token} encodes to {len(ids)} ids instead of one.")
    if force_template or not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = STARCHAT_TEMPLATE
    if tokenizer.pad_token is None:
        # Padding is always masked out of the loss and attention, so any token will do.
        tokenizer.pad_token = tokenizer.eos_token or "<|end|>"
    if model is not None:
        embeddings = model.get_input_embeddings()
        rows = getattr(embeddings, "num_embeddings", None)
        # Under ZeRO-3 the local weight is an empty shard: trust ds_shape when present.
        shape = getattr(embeddings.weight, "ds_shape", None)
        if shape is not None:
            rows = shape[0]
        if rows is None or rows < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
    return tokenizer


def copy_token_embedding(model: Any, source_id: int, target_id: int) -> None:
    """Start ``target_id``'s embedding (and output row, if untied) as a copy of ``source_id``'s.

    Used when switching a chat model to the StarChat format: ``<|end|>`` begins as the old
    end-of-turn token (e.g. ``<|im_end|>``), so the model can already end its turns and
    training only has to tell the two apart. Works under ZeRO-3 by gathering the matrices.
    """
    import contextlib

    import torch

    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not matrices[0]:
        matrices.append(output.weight)
    gather: Any = contextlib.nullcontext()
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(matrices, modifier_rank=0)
    except ImportError:  # pragma: no cover - deepspeed is optional
        pass
    with gather, torch.no_grad():
        for weight in matrices:
            if weight.shape[0] > max(source_id, target_id):
                weight[target_id] = weight[source_id]


def end_of_turn_id(tokenizer: Any) -> int:
    """The id that closes an assistant turn in this tokenizer's chat format."""
    fmt = chat_format_for(tokenizer, "template" if tokenizer.chat_template else "starchat")
    eos = tokenizer.eos_token_id
    others = [i for i in fmt.stop_token_ids if i != eos]
    if others:
        return others[0]
    if eos is None:
        raise ValueError("The chat template has no end-of-turn token and the tokenizer no eos.")
    return int(eos)


def _pieces(tokenizer: Any, messages: Sequence[dict]) -> list[tuple[int | None, str]]:
    """The rendered dialogue as (message index or None for markup, text) pieces in order."""
    marked = [{"role": m["role"], "content": _PLACEHOLDER.format(i)} for i, m in enumerate(messages)]
    rendered = tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=False)
    pieces: list[tuple[int | None, str]] = []
    pos = 0
    for match in _PLACEHOLDER_RE.finditer(rendered):
        pieces.append((None, rendered[pos : match.start()]))
        index = int(match.group(1))
        pieces.append((index, messages[index]["content"]))
        pos = match.end()
    pieces.append((None, rendered[pos:]))
    return [p for p in pieces if p[1]]


def tokenize_dialogue(tokenizer: Any, messages: Sequence[dict], max_length: int) -> dict:
    """Token ids and labels of one dialogue, truncated to ``max_length`` after labelling.

    Returns ``{"input_ids": [...], "labels": [...]}`` (same length). Labels are -100
    everywhere except assistant contents and the end-of-turn token that closes them.
    """
    _check(tokenizer, max_length)
    return _tokenize(tokenizer, messages, max_length, end_of_turn_id(tokenizer))


def _check(tokenizer: Any, max_length: int) -> None:
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}.")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("The tokenizer has no chat_template; call add_chat_tokens first.")


def _tokenize(tokenizer: Any, messages: Sequence[dict], max_length: int, end_id: int) -> dict:
    input_ids: list[int] = []
    labels: list[int] = []
    after_assistant = False
    for index, text in _pieces(tokenizer, messages):
        if index is None:
            ids = encode_markup(tokenizer, text)
            piece_labels = [IGNORE_INDEX] * len(ids)
            if after_assistant and ids and ids[0] == end_id:
                piece_labels[0] = end_id
            after_assistant = False
        else:
            ids = encode_text(tokenizer, text)
            is_assistant = messages[index]["role"] == "assistant"
            piece_labels = list(ids) if is_assistant else [IGNORE_INDEX] * len(ids)
            after_assistant = is_assistant
        input_ids += ids
        labels += piece_labels
    return {"input_ids": input_ids[:max_length], "labels": labels[:max_length]}


def has_labels(example: dict) -> bool:
    """Whether a tokenized example has at least one labelled token."""
    return any(label != IGNORE_INDEX for label in example["labels"])


def tokenize_dialogues(tokenizer: Any, dialogues: Iterable[dict], max_length: int) -> list[dict]:
    """Tokenize dialogue rows, dropping those left with no labelled token (logged)."""
    examples, dropped = [], 0
    _check(tokenizer, max_length)
    end_id = end_of_turn_id(tokenizer)  # costs a template render: once, not per dialogue
    for row in dialogues:
        example = _tokenize(tokenizer, row["messages"], max_length, end_id)
        if has_labels(example):
            examples.append(example)
        else:
            dropped += 1
    if dropped:
        log.warning("dropped %d dialogues with no assistant token within %d tokens", dropped, max_length)
    return examples
