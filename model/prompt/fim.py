"""Fill-in-the-middle prompts for code completion at the cursor, as token ids.

Each model family has its own FIM format (Continue's ``AutocompleteTemplate.ts`` keeps them
as data; so do we): a template string whose sentinel tokens (``<fim_prefix>``, ``<PRE>``,
``<｜fim▁hole｜>``…) become their single token ids, and whose placeholders ``{prefix}``,
``{suffix}``, ``{path}`` and ``{text}`` are file text, tokenized as data
(``chat_format.encode_text``), so a literal ``<fim_middle>`` typed in a file stays text.
The family is detected from the tokenizer's vocabulary; a model without FIM tokens (the
embedded SmolLM2) gets a prefix-only continuation.

The window is counted in tokens (``context_tokens``, default 1,024): about three quarters
for the end of the prefix, one quarter for the start of the suffix (a short side lends its
share to the other), and what is left for snippets of other open files where the family has
a repository format (``<file_sep>``, ``<|file_sep|>``), most recently edited first, the most
recent placed nearest the current file.

Token healing (prefix-only continuations): a cursor rarely sits on a token boundary the
model knows. At the start of a line the prefix ends in a lone ``\n`` token where the model
only ever saw ``\n`` merged with the next line's indentation (``"\n   "`` + ``" return"``), and
mid-word it ends in ``" ret"`` where it saw ``" return"``. So the prefix's last token is taken
off the prompt (``FimPrompt.heal``) and the engine makes the answer start with its text
(llama.cpp: a grammar; torch: a mask on the first tokens) and hides that text
(:class:`Healing`). FIM families need none: they were trained on prefixes cut anywhere.

Pure: no torch, no transformers; works with any tokenizer that has ``get_vocab`` and the
``__call__`` of ``transformers``/``model.prompt.tokenizer.LiteTokenizer``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .chat_format import encode_text
from .stops import StopFilter

DEFAULT_CONTEXT_TOKENS = 1024
MIN_CONTEXT_TOKENS = 32
MAX_CONTEXT_TOKENS = 32_768
MIN_FILE_TOKENS = 24  # a snippet shorter than this is noise, not context
_CHARS_PER_TOKEN_CAP = 16  # text beyond this many chars per token of budget is never read
# A prefix longer than its share is cut on the left, and the cut moves in steps, not with every
# keystroke: the text is read from a point that moves in _ANCHOR_CHARS steps and the tokens are
# dropped in steps of 1/_SLIDE_STEPS of the window. So the prompts of successive keystrokes
# start alike and the engine's prompt cache (llama.cpp's slot, our prefix cache) reuses all but
# the last few tokens; a cut that moved by one token per keystroke would re-read the window.
_ANCHOR_CHARS = 256
_SLIDE_STEPS = 16


@dataclass(frozen=True)
class FimTemplate:
    """One family's format. ``sentinels`` are the special tokens the templates use."""

    name: str
    sentinels: tuple[str, ...]
    fim: str  # with {prefix} and {suffix}
    file: str = ""  # one other open file: {path}, {text}; empty = no repository format
    current: str = ""  # the current file's header before the FIM part: {path}
    stops: tuple[str, ...] = ()  # special tokens that end a completion besides eos


TEMPLATES: dict[str, FimTemplate] = {
    "qwen": FimTemplate(
        "qwen",
        ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_sep|>"),
        "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
        file="<|file_sep|>{path}\n{text}\n",
        current="<|file_sep|>{path}\n",
        stops=("<|endoftext|>", "<|file_sep|>", "<|fim_pad|>", "<|repo_name|>"),
    ),
    "starcoder": FimTemplate(
        "starcoder",
        ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>"),
        "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",
        file="<file_sep>{path}\n{text}\n",
        current="<file_sep>{path}\n",
        stops=("<|endoftext|>", "<file_sep>", "<fim_pad>"),
    ),
    "deepseek": FimTemplate(
        "deepseek",
        ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
        "<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>",
        stops=("<|EOT|>", "<｜end▁of▁sentence｜>"),
    ),
    "codellama": FimTemplate(
        "codellama",
        ("<PRE>", "<SUF>", "<MID>"),
        "<PRE> {prefix} <SUF>{suffix} <MID>",
        stops=("<EOT>",),
    ),
    "none": FimTemplate("none", (), "{prefix}"),
}
#: Detection order: the first family whose FIM sentinels the vocabulary has.
DETECTION_ORDER = ("qwen", "starcoder", "deepseek", "codellama")
TEMPLATE_NAMES = ("auto", *TEMPLATES)

_PLACEHOLDER_RE = re.compile(r"\{(prefix|suffix|path|text)\}")


def _sentinel_id(vocab: dict[str, int], token: str) -> tuple[int, bool] | None:
    """The id of ``token``; the flag says it is spelled with SentencePiece's leading ``▁``."""
    if token in vocab:
        return vocab[token], False
    if "\u2581" + token in vocab:  # CodeLlama's "▁<PRE>": the token carries the space
        return vocab["\u2581" + token], True
    return None


def _fim_sentinels(template: FimTemplate) -> tuple[str, ...]:
    return tuple(t for t in template.sentinels if t in template.fim)


def detect_template(tokenizer: Any) -> str:
    """The FIM family of ``tokenizer`` by its vocabulary, or ``none``."""
    vocab = tokenizer.get_vocab()
    for name in DETECTION_ORDER:
        if all(_sentinel_id(vocab, t) is not None for t in _fim_sentinels(TEMPLATES[name])):
            return name
    return "none"


def resolve_template(tokenizer: Any, name: str = "auto") -> FimTemplate:
    """The template called ``name`` (``auto``: detected); ValueError when it cannot work."""
    if name == "auto":
        return TEMPLATES[detect_template(tokenizer)]
    if name not in TEMPLATES:
        raise ValueError(f"Unknown FIM template {name!r}: use {', '.join(TEMPLATE_NAMES)}.")
    template = TEMPLATES[name]
    vocab = tokenizer.get_vocab()
    missing = [t for t in _fim_sentinels(template) if _sentinel_id(vocab, t) is None]
    if missing:
        raise ValueError(f"The model's tokenizer lacks the {name} FIM token(s) {', '.join(missing)}.")
    return template


class _Encoder:
    """Renders a template into ids: sentinels by id, everything else as data."""

    def __init__(self, tokenizer: Any, template: FimTemplate):
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self.ids: dict[str, tuple[int, bool]] = {}
        for token in template.sentinels:
            found = _sentinel_id(vocab, token)
            if found is not None:
                self.ids[token] = found
        self.split_re = re.compile(
            "(" + "|".join(re.escape(t) for t in sorted(self.ids, key=len, reverse=True)) + ")"
        ) if self.ids else None

    def has(self, text: str) -> bool:
        """True when every sentinel the text names exists in this vocabulary."""
        names = [t for t in TEMPLATES_SENTINELS if t in text]
        return all(t in self.ids for t in names)

    def markup(self, text: str) -> list[int]:
        """Literal template text: sentinels as their ids, the rest as plain text."""
        pieces = self.split_re.split(text) if self.split_re else [text]
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if piece in self.ids:
                token_id, spaced = self.ids[piece]
                ids.append(token_id)
                continue
            nxt = pieces[i + 1] if i + 1 < len(pieces) else ""
            if nxt in self.ids and self.ids[nxt][1] and piece.endswith(" "):
                piece = piece[:-1]  # "▁<SUF>" already is " <SUF>"
            ids += encode_text(self.tokenizer, piece)
        return ids

    def render(self, template: str, values: dict[str, list[int]]) -> list[int]:
        """``template`` with each placeholder replaced by its ready ids."""
        ids: list[int] = []
        pos = 0
        for match in _PLACEHOLDER_RE.finditer(template):
            ids += self.markup(template[pos : match.start()])
            ids += values.get(match.group(1), [])
            pos = match.end()
        return ids + self.markup(template[pos:])


TEMPLATES_SENTINELS = tuple(sorted({t for tpl in TEMPLATES.values() for t in tpl.sentinels}))
#: Tokens that never belong in a completion, whatever the family: every family's sentinels
#: and end tokens, repository markup, and the usual end-of-text tokens. A completion ends
#: at the first of them that the model's vocabulary has.
END_TOKENS = tuple(sorted({
    *TEMPLATES_SENTINELS, *(t for tpl in TEMPLATES.values() for t in tpl.stops),
    "<fim_pad>", "<|fim_pad|>", "<|repo_name|>", "<repo_name>", "<reponame>", "<filename>",
    "<EOT>", "<|EOT|>", "<|endoftext|>", "<｜end▁of▁sentence｜>", "<|im_end|>", "<|im_start|>",
    "<|eot_id|>",
}))


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ids of ``END_TOKENS`` in ``tokenizer``'s vocabulary, and its end-of-sequence id."""
    vocab = tokenizer.get_vocab()
    ids = {found[0] for t in END_TOKENS if (found := _sentinel_id(vocab, t)) is not None}
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    return sorted(ids)


@dataclass
class FimPrompt:
    """The prompt ids and what went into them."""

    ids: list[int]
    template: str
    prefix_tokens: int
    suffix_tokens: int
    files: list[str] = field(default_factory=list)  # paths of the snippets included
    truncated: list[str] = field(default_factory=list)
    stops: tuple[str, ...] = ()
    heal: str = ""  # the prefix's last token, taken off the prompt: see token healing above


def _text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"fim.{name} must be a string.")
    return value


def _files(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("fim.files must be a list of {path, text} maps.")
    out = []
    for i, f in enumerate(value):
        if not (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("text"), str)):
            raise ValueError(f"fim.files[{i}] must be a map with string path and text.")
        out.append((f["path"], f["text"]))
    return out


def context_tokens_of(value: Any) -> int:
    """Validate ``context_tokens``; ValueError with a sentence when it is out of range."""
    if value is None:
        return DEFAULT_CONTEXT_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_CONTEXT_TOKENS <= value <= MAX_CONTEXT_TOKENS:
        raise ValueError(f"fim.context_tokens must be an integer from {MIN_CONTEXT_TOKENS} to {MAX_CONTEXT_TOKENS}.")
    return value


def build_fim_prompt(tokenizer: Any, fim: Any, limit: int | None = None) -> FimPrompt:
    """Turn a ``fim`` request (prefix, suffix, path, files, template, context_tokens) into ids.

    ``limit`` caps the window (the model's context minus the tokens to generate).
    Raises ValueError with one sentence on a malformed request.
    """
    if not isinstance(fim, dict):
        raise ValueError("'fim' must be a map with prefix and suffix.")
    unknown = sorted(set(fim) - {"prefix", "suffix", "path", "files", "template", "context_tokens"})
    if unknown:
        raise ValueError(f"Unknown fim field(s): {', '.join(unknown)}.")
    prefix, suffix = _text(fim.get("prefix"), "prefix"), _text(fim.get("suffix"), "suffix")
    path = _text(fim.get("path"), "path")
    files = _files(fim.get("files"))
    name = fim.get("template") or "auto"
    if not isinstance(name, str):
        raise ValueError("fim.template must be a string.")
    budget = context_tokens_of(fim.get("context_tokens"))
    if limit is not None:
        budget = min(budget, limit)
    template = resolve_template(tokenizer, name)
    enc = _Encoder(tokenizer, template)

    repo = bool(template.file and path and enc.has(template.current))
    head = enc.render(template.current, {"path": encode_text(tokenizer, path)}) if repo else []
    overhead = len(head) + len(enc.render(template.fim, {}))
    body = budget - overhead
    if body < 1:
        raise ValueError(f"A {budget}-token window leaves no room for the code around the cursor.")
    cap = budget * _CHARS_PER_TOKEN_CAP
    has_suffix = "{suffix}" in template.fim
    anchor = max(0, len(prefix) - cap)
    anchor -= anchor % _ANCHOR_CHARS
    p_ids = encode_text(tokenizer, prefix[anchor:])
    s_ids = encode_text(tokenizer, suffix[:cap]) if has_suffix else []
    p_keep = min(len(p_ids), max(body * 3 // 4, body - len(s_ids)))
    s_keep = min(len(s_ids), body - p_keep)
    truncated = []
    if p_keep < len(p_ids) or anchor:
        truncated.append("prefix")
    if has_suffix and (s_keep < len(s_ids) or len(suffix) > cap):
        truncated.append("suffix")
    if p_keep < len(p_ids):
        step = max(1, body // _SLIDE_STEPS)
        p_ids = p_ids[-(-(len(p_ids) - p_keep) // step) * step :]  # drop whole steps
    s_ids = s_ids[:s_keep]

    left = body - p_keep - s_keep
    snippets: list[list[int]] = []
    used: list[str] = []
    if repo and files:
        for fpath, ftext in files:  # most recently edited first
            if fpath == path:
                continue
            wrapper = len(enc.render(template.file, {"path": encode_text(tokenizer, fpath)}))
            room = left - wrapper
            if room < MIN_FILE_TOKENS:
                if "files" not in truncated:
                    truncated.append("files")
                continue
            t_ids = encode_text(tokenizer, ftext[: room * _CHARS_PER_TOKEN_CAP])[:room]
            snippet = enc.render(template.file, {"path": encode_text(tokenizer, fpath), "text": t_ids})
            snippets.append(snippet)
            used.append(fpath)
            left -= len(snippet)
    heal = ""
    if template.fim.endswith("{prefix}") and len(p_ids) > 1:  # the prompt ends with the prefix
        heal = healable_text(tokenizer, p_ids[-1])
        if heal:
            p_ids = p_ids[:-1]
    ids: list[int] = []
    for snippet in reversed(snippets):  # the most recent ends up nearest the cursor
        ids += snippet
    ids += head + enc.render(template.fim, {"prefix": p_ids, "suffix": s_ids})
    if not ids:
        raise ValueError("The completion prompt is empty: there is no text before the cursor.")
    return FimPrompt(ids, template.name, len(p_ids), len(s_ids), used, truncated, template.stops, heal)


def healable_text(tokenizer: Any, token_id: int) -> str:
    """The text of ``token_id`` when the answer can be made to start with it: whole
    characters that tokenize back to that one token; else empty (no healing)."""
    text = tokenizer.decode([token_id], skip_special_tokens=True)
    if not text or "\ufffd" in text or encode_text(tokenizer, text) != [token_id]:
        return ""
    return text


def heal_candidates(token_texts: list[str], left: str) -> list[int]:
    """Ids of the tokens that may come next while the answer must still start with ``left``:
    those whose text starts with it, or is a non-empty start of it."""
    return [i for i, t in enumerate(token_texts) if t and (t.startswith(left) or left.startswith(t))]


class Healing:
    """What to show of a healed answer, streamed: its first tokens were constrained to spell
    ``text``, which is hidden; ``stops`` are then cut from the rest (an engine that matches
    stop strings on the whole answer would find one inside the healed text: a ``"\n\n"``
    token healed at a line start ends the answer at once) by ``model.prompt.stops.StopFilter``.
    Feed each delta in order to :meth:`take`, show what it returns, and :meth:`rest` at the end."""

    def __init__(self, text: str = "", stops: tuple[str, ...] | list[str] = ()):
        self.left = text
        self.filter = StopFilter(stops)

    @property
    def stopped(self) -> bool:
        return self.filter.stopped

    @property
    def text(self) -> str:
        """The answer after the healed text, shown or held back."""
        return self.filter.text

    def take(self, delta: str) -> str:
        if self.filter.stopped:
            return ""
        if self.left:
            k = 0
            while k < min(len(self.left), len(delta)) and self.left[k] == delta[k]:
                k += 1
            # (an engine that did not keep to the constraint: show the rest rather than lose it)
            self.left = self.left[k:] if k == len(delta) else ""
            delta = delta[k:]
        return self.filter.feed(delta)

    def rest(self) -> str:
        """The held-back end, once the answer is over."""
        return self.filter.finish()
