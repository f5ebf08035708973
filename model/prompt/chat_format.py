"""Messages -> prompt token ids, in the model's own chat format.

Three kinds:
- ``template``: the tokenizer's own ``chat_template`` (ChatML for the embedded model);
- ``starchat``: the StarChat dialogue template (``<|system|>``, ``<|user|>``,
  ``<|assistant|>``, ``<|end|>``), for tokenizers that carry those tokens but no template;
- ``dialogue``: "dialogue prompting" for base models with no chat training: a short
  few-shot ``Human:``/``Assistant:`` prompt in the spirit of the TA prompt, stopping at
  the next ``Human:``.

Content is data, never markup: the template is rendered with placeholders where message
contents go, the markup around them is tokenized with special tokens recognised, and each
content is tokenized with special tokens split into plain text (``encode_text``). A file
that contains ``<|im_end|>`` therefore cannot end the turn.

Templates have rules of their own, and we always send a system turn. Each template is
probed once (``probe_template``): one that refuses a system turn (Gemma, Mistral v0.2,
StarCoder2-instruct raise; Phi-3-mini's first template drops it silently) gets the system
text merged into the first user turn, which is what those models were trained on; one that
demands alternating roles (Gemma, Mistral) gets consecutive turns of one role merged and
leading assistant turns dropped. A template that still raises is reported as
``ChatTemplateError`` with its own message and the model's name.

This module imports no torch/transformers, so the language server can use its constants.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

STARCHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
STARCHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
STARCHAT_SYSTEM_PROMPT = "Below is a dialogue between a human and an AI assistant called StarChat."

DEFAULT_SYSTEM_PROMPT = (
    "You are StarChat, an expert programming assistant inside the user's code editor. "
    "You are helpful, polite, honest and practical. Answer precisely and concisely. "
    "When you write code, put it in one fenced code block with the language name. "
    "When you fix code, return the complete corrected code in one fenced block, then "
    "explain the change in a sentence or two. If you are not sure, say so rather than guess."
)

DIALOGUE_PREAMBLE = (
    "Below are a series of dialogues between various people and an AI technical assistant. "
    "The assistant tries to be helpful, polite, honest, sophisticated, emotionally aware, "
    "and humble-but-knowledgeable. The assistant is happy to help with code questions, and "
    "will do its best to understand exactly what is needed. It also tries to avoid giving "
    "false or misleading information, and it caveats when it isn't entirely sure about the "
    "right answer.\n\n"
    "-----\n\n"
    "Human: Write a function that takes a list of numbers and returns their mean.\n\n"
    "Assistant: Sure:\n\n```python\ndef mean(numbers):\n"
    "    if not numbers:\n        raise ValueError(\"mean() of an empty list\")\n"
    "    return sum(numbers) / len(numbers)\n```\n\n"
    "It raises an error for an empty list instead of dividing by zero.\n\n"
    "Human: Why does `print(0.1 + 0.2 == 0.3)` print False?\n\n"
    "Assistant: Floating-point numbers are stored in binary, and 0.1 and 0.2 have no exact "
    "binary representation, so their sum is 0.30000000000000004. Compare with a tolerance "
    "instead: `math.isclose(0.1 + 0.2, 0.3)`.\n\n"
    "-----\n\n"
)
DIALOGUE_ROLES = {"user": "Human", "assistant": "Assistant"}
DIALOGUE_STOPS = ("\nHuman:", "\n-----")

_PLACEHOLDER = "\ue000{}\ue001"
_MERGE_SEPARATOR = "\n\n"


class ChatTemplateError(ValueError):
    """The model's chat template refused a conversation; the message is one sentence."""


def template_failure(model_name: str, exc: Exception) -> ChatTemplateError:
    """The sentence for a template that raised: its own message and the model's name."""
    detail = str(exc).strip().rstrip(".") or type(exc).__name__
    return ChatTemplateError(f"The chat template of {model_name or 'this model'} refused the "
                             f"conversation: {detail}.")


@dataclass(frozen=True)
class TemplateRules:
    """What a chat template accepts: its own system turn, and any order of roles."""

    system_turn: bool = True
    alternates: bool = False


def _renders_all(tokenizer: Any, template: str | None, roles: Sequence[str]) -> bool:
    """Whether the template renders these roles with every content in its output."""
    marked = [{"role": r, "content": _PLACEHOLDER.format(i)} for i, r in enumerate(roles)]
    try:
        text = tokenizer.apply_chat_template(marked, chat_template=template, tokenize=False,
                                             add_generation_prompt=True)
    except Exception:  # jinja's TemplateError from raise_exception, or any defect of the template
        return False
    return all(_PLACEHOLDER.format(i) in text for i in range(len(roles)))


def probe_template(tokenizer: Any, template: str | None = None) -> TemplateRules:
    """Find out once whether the template takes a system turn and roles in any order."""
    return TemplateRules(
        system_turn=_renders_all(tokenizer, template, ("system", "user")),
        alternates=not _renders_all(tokenizer, template, ("user", "user")),
    )


def fit_roles(messages: Sequence[dict], rules: TemplateRules) -> list[dict]:
    """The messages reshaped to what the template accepts (see the module docstring)."""
    out = [{"role": m["role"], "content": str(m["content"])} for m in messages]
    if not rules.system_turn:
        system = [m["content"] for m in out if m["role"] == "system"]
        out = [m for m in out if m["role"] != "system"]
        if system:
            text = _MERGE_SEPARATOR.join(system)
            first_user = next((m for m in out if m["role"] == "user"), None)
            if first_user is None:
                out.insert(0, {"role": "user", "content": text})
            else:
                first_user["content"] = text + _MERGE_SEPARATOR + first_user["content"]
    if rules.alternates:
        merged: list[dict] = []
        for m in out:
            if m["role"] == "assistant" and not any(x["role"] == "user" for x in merged):
                continue  # an answer whose question was cut has nothing to follow
            if merged and merged[-1]["role"] == m["role"]:
                merged[-1]["content"] += _MERGE_SEPARATOR + m["content"]
            else:
                merged.append(m)
        out = merged
    return out
_PLACEHOLDER_RE = re.compile("\ue000(\\d+)\ue001")


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Tokenize content so that special-token strings inside it stay plain text."""
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def encode_markup(tokenizer: Any, text: str) -> list[int]:
    """Tokenize template markup: special-token strings become their single ids."""
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _has_tokens(tokenizer: Any, tokens: Sequence[str]) -> bool:
    vocab = tokenizer.get_vocab()
    return all(t in vocab for t in tokens)


@dataclass
class ChatFormat:
    """How one tokenizer turns messages into prompt ids, and when generation stops."""

    tokenizer: Any
    kind: str
    template: str | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    stop_strings: list[str] = field(default_factory=list)
    rules: TemplateRules = field(default_factory=TemplateRules)
    model_name: str = ""  # for error messages

    def _pieces(self, messages: Sequence[dict], add_generation_prompt: bool) -> list[tuple[bool, str]]:
        """The prompt as (is_content, text) pieces in order."""
        if self.kind == "dialogue":
            return _dialogue_pieces(messages, add_generation_prompt)
        messages = fit_roles(messages, self.rules)
        marked = [
            {"role": m["role"], "content": _PLACEHOLDER.format(i)} for i, m in enumerate(messages)
        ]
        try:
            rendered = self.tokenizer.apply_chat_template(
                marked,
                chat_template=self.template,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        except Exception as exc:  # jinja's TemplateError (raise_exception) or a broken template
            raise template_failure(self.model_name, exc) from exc
        pieces: list[tuple[bool, str]] = []
        pos = 0
        for match in _PLACEHOLDER_RE.finditer(rendered):
            pieces.append((False, rendered[pos : match.start()]))
            pieces.append((True, str(messages[int(match.group(1))]["content"])))
            pos = match.end()
        pieces.append((False, rendered[pos:]))
        return [p for p in pieces if p[1]]

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The prompt as text (for display and tests)."""
        return "".join(text for _, text in self._pieces(messages, add_generation_prompt))

    def encode(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
        """The prompt as token ids, content tokenized as data."""
        ids: list[int] = []
        for is_content, text in self._pieces(messages, add_generation_prompt):
            ids += encode_text(self.tokenizer, text) if is_content else encode_markup(self.tokenizer, text)
        return ids

    def count(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> int:
        return len(self.encode(messages, add_generation_prompt))


def _dialogue_pieces(messages: Sequence[dict], add_generation_prompt: bool) -> list[tuple[bool, str]]:
    pieces: list[tuple[bool, str]] = []
    system = [m["content"] for m in messages if m["role"] == "system"]
    preamble = DIALOGUE_PREAMBLE
    if system:
        preamble = system[0].rstrip() + "\n\n-----\n\n" + DIALOGUE_PREAMBLE.split("-----\n\n", 1)[1]
    pieces.append((False, preamble))
    for m in messages:
        if m["role"] == "system":
            continue
        pieces.append((False, f"{DIALOGUE_ROLES.get(m['role'], 'Human')}: "))
        pieces.append((True, str(m["content"]).strip()))
        pieces.append((False, "\n\n"))
    if add_generation_prompt:
        pieces.append((False, "Assistant:"))
    return [p for p in pieces if p[1]]


def _end_of_turn_token(tokenizer: Any, template: str | None) -> str | None:
    """The special token the template puts right after an assistant message, if any."""
    probe = [{"role": "user", "content": "\ue000"}, {"role": "assistant", "content": "\ue001"}]
    try:
        text = tokenizer.apply_chat_template(probe, chat_template=template, tokenize=False)
    except Exception:  # templates that insist on other roles: fall back to eos only
        return None
    after = text.split("\ue001", 1)[-1]
    for token in tokenizer.all_special_tokens + list(tokenizer.get_added_vocab()):
        if after.startswith(token):
            return token
    return None


def chat_format_for(tokenizer: Any, mode: str = "auto", model_name: str = "") -> ChatFormat:
    """Pick the chat format for ``tokenizer``: its template, StarChat's, or dialogue prompting.

    ``model_name`` names the model in the sentence of a template that refuses a conversation.
    """
    if mode not in ("auto", "template", "starchat", "dialogue"):
        raise ValueError(f"Unknown chat format {mode!r}: use auto, template, starchat or dialogue.")
    if mode == "auto":
        if getattr(tokenizer, "chat_template", None):
            mode = "template"
        elif _has_tokens(tokenizer, STARCHAT_TOKENS):
            mode = "starchat"
        else:
            mode = "dialogue"
    if mode == "template" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("This tokenizer has no chat_template; use the starchat or dialogue format.")
    if mode == "starchat" and not _has_tokens(tokenizer, STARCHAT_TOKENS):
        raise ValueError("This tokenizer lacks the StarChat tokens; run training.tokenize.add_chat_tokens.")

    stops: set[int] = set()
    if tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    stop_strings: list[str] = []
    template = None
    if mode == "template":
        end = _end_of_turn_token(tokenizer, None)
    elif mode == "starchat":
        template, end = STARCHAT_TEMPLATE, "<|end|>"
    else:
        end = None
        stop_strings = list(DIALOGUE_STOPS)
    if end is not None:
        stops.add(int(tokenizer.convert_tokens_to_ids(end)))
    rules = probe_template(tokenizer, template) if mode != "dialogue" else TemplateRules()
    return ChatFormat(tokenizer, mode, template, sorted(stops), stop_strings, rules, model_name)
