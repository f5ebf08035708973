"""A light tokenizer for folders with a ``tokenizer.json``, without transformers.

Why it exists: the model worker must start in a few seconds, and
``from transformers import AutoTokenizer`` plus ``from_pretrained`` alone take seconds. This
module is built only on ``tokenizers`` (Rust; import plus load take ~0.2 s) and ``jinja2``, and copies
what transformers 5 does for ``TokenizersBackend`` tokenizers, for the part of the API this
project uses: ``__call__``/``encode`` (with ``split_special_tokens``), ``decode``,
``apply_chat_template``, the special tokens and the vocabulary lookups. The tests compare it
with ``AutoTokenizer`` on the embedded model's tokenizer.

``can_load_lite`` says whether a folder is one transformers would load as a plain
``TokenizersBackend`` (model-specific tokenizer classes rebuild the pipeline themselves, so
those folders should go through transformers). Settings are read-only: there is no
``add_tokens``, ``save_pretrained``, padding or truncation.

It imports no transformers and no torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, processors

VERY_LARGE_INTEGER = int(1e30)  # transformers' model_max_length when the config has none
SPECIAL_ATTRIBUTES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
_PLAIN_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def can_load_lite(folder: str | Path) -> bool:
    """True when ``folder`` has a tokenizer.json that transformers would load as is."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        return False
    config = _read_json(folder / "tokenizer_config.json")
    return config.get("tokenizer_class") in _PLAIN_CLASSES and "auto_map" not in config


def load_lite_tokenizer(folder: str | Path) -> LiteTokenizer:
    """Load the tokenizer in ``folder`` (tokenizer.json, tokenizer_config.json, chat templates)."""
    path = Path(folder)
    if not (path / "tokenizer.json").is_file():
        raise ValueError(
            f"The folder {folder} has no tokenizer.json, so the light tokenizer cannot load it."
        )
    config = _read_json(path / "tokenizer_config.json")
    config.pop("add_bos_token", None)  # transformers ignores these when tokenizer.json exists
    config.pop("add_eos_token", None)
    templates = {}
    if (path / "chat_template.jinja").is_file():
        templates["default"] = (path / "chat_template.jinja").read_text(encoding="utf-8")
    for file in sorted((path / "additional_chat_templates").glob("*.jinja")):
        templates[file.name.removesuffix(".jinja")] = file.read_text(encoding="utf-8")
    if templates:
        config["chat_template"] = (
            templates["default"] if list(templates) == ["default"] else templates
        )
    if "additional_special_tokens" in config and not config.get("extra_special_tokens"):
        config["extra_special_tokens"] = config.pop("additional_special_tokens")
    if "added_tokens_decoder" not in config:  # legacy folders: special_tokens_map.json
        for key, value in _read_json(path / "special_tokens_map.json").items():
            if isinstance(value, dict) and key != "extra_special_tokens":
                value = {**value, "special": True}
            elif key == "extra_special_tokens" and isinstance(value, list):
                extras = list(config.get("extra_special_tokens") or [])
                value = extras + [t for t in value if t not in extras]
            config[key] = value
    backend = Tokenizer.from_file(str(path / "tokenizer.json"))
    if "added_tokens_decoder" not in config:  # transformers then takes tokenizer.json's
        config["added_tokens_decoder"] = backend.get_added_tokens_decoder()
    return LiteTokenizer(backend, config, str(folder))


def _added_token(value: Any) -> Any:
    """A config value as transformers reads it: AddedToken dicts become AddedTokens."""
    if isinstance(value, dict) and "content" in value:
        fields = {k: v for k, v in value.items() if k != "__type"}
        return AddedToken(**fields)
    return value


class LiteTokenizer:
    """The subset of a transformers ``TokenizersBackend`` that this project uses."""

    def __init__(self, backend: Tokenizer, config: dict, name_or_path: str = ""):
        self._tokenizer = backend
        self.name_or_path = name_or_path
        self.chat_template = config.get("chat_template")
        if isinstance(self.chat_template, list):
            self.chat_template = {t["name"]: t["template"] for t in self.chat_template}
        max_length = config.get("model_max_length", config.get("max_len"))
        self.model_max_length = VERY_LARGE_INTEGER if max_length is None else max_length
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self._clean_up_bpe = bool(
            config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output")
        )
        self.split_special_tokens = bool(config.get("split_special_tokens", False))
        self.model_input_names = list(
            config.get("model_input_names") or ["input_ids", "attention_mask"]
        )

        decoder = {
            int(i): _added_token(t) for i, t in (config.get("added_tokens_decoder") or {}).items()
        }
        by_content = {str(t): t for t in decoder.values()}
        # Named tokens in transformers' order: the standard ones, then model-specific ones
        # (those saved as AddedToken dicts before those saved as strings), then a dict of extras.
        found = {k: _added_token(v) for k, v in config.items() if k.endswith("_token")}
        found = {k: v for k, v in found.items() if isinstance(v, (str, AddedToken))}
        custom = sorted(
            (k for k in found if k not in SPECIAL_ATTRIBUTES),
            key=lambda k: isinstance(config[k], str),
        )
        self._special: dict[str, Any] = {
            k: by_content.get(str(found[k]), found[k]) for k in SPECIAL_ATTRIBUTES if k in found
        }
        self._special.update({k: found[k] for k in custom})
        extras = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        if isinstance(extras, dict):
            self._special.update({k: _added_token(v) for k, v in extras.items()})
            extras = []
        self._extra = [_added_token(t) for t in extras]
        self._sync_backend(decoder)

    def _sync_backend(self, decoder: dict[int, Any]) -> None:
        """Register the added and special tokens with the backend as transformers does."""
        backend = self._tokenizer
        backend.no_truncation()  # transformers turns both off on every call without them
        backend.no_padding()
        to_add = [token for _, token in sorted(decoder.items())]
        known = [t.content for t in backend.get_added_tokens_decoder().values()] + [
            str(t) for t in to_add
        ]
        for token in [*self._special.values(), *self._extra]:
            if str(token) not in known and token not in to_add:
                to_add.append(token)
        if to_add:
            named = {str(t) for t in self._special.values()}
            tokens = []
            for token in to_add:
                if isinstance(token, str):
                    token = AddedToken(token, special=True)
                elif not token.special and str(token) in named:
                    token.special = True
                tokens.append(token)
            backend.add_tokens(tokens)
        for token in [*self._special.values(), *self._extra]:
            to_add.append(
                token
                if isinstance(token, AddedToken)
                else AddedToken(token, special=True, normalized=False)
            )
        if to_add:
            backend.add_special_tokens(to_add)
        if backend.post_processor is None:
            backend.post_processor = processors.TemplateProcessing(
                single="$A:0", pair="$A:0 $B:1", special_tokens=[]
            )
        backend.encode_special_tokens = self.split_special_tokens

    # Special tokens ---------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        base = name.removesuffix("_id")
        special = self.__dict__.get("_special", {})
        if base in special or base in SPECIAL_ATTRIBUTES:
            token = special.get(base)
            if token is None:
                return None
            return self.convert_tokens_to_ids(str(token)) if name != base else str(token)
        raise AttributeError(f"{type(self).__name__} has no attribute {name}")

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return {key: str(value) for key, value in self._special.items()}

    @property
    def extra_special_tokens(self) -> list[str]:
        return [str(t) for t in self._extra]

    @property
    def all_special_tokens(self) -> list[str]:
        tokens = [str(t) for t in [*self._special.values(), *self._extra]]
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    # Vocabulary -------------------------------------------------------------------------

    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __bool__(self) -> bool:
        return True

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def get_added_vocab(self) -> dict[str, int]:
        added = sorted(self._tokenizer.get_added_tokens_decoder().items())
        return {token.content: index for index, token in added}

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> Any:
        if isinstance(tokens, str):
            index = self._tokenizer.token_to_id(tokens)
            return self.unk_token_id if index is None else index
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | list[int], skip_special_tokens: bool = False) -> Any:
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(int(i)) for i in ids if int(i) not in skip]

    # Encoding and decoding --------------------------------------------------------------

    def __call__(
        self,
        text: str | list[str],
        add_special_tokens: bool = True,
        split_special_tokens: bool | None = None,
    ) -> dict[str, Any]:
        """``{"input_ids": ..., "attention_mask": ...}`` for a string or a list of strings."""
        if split_special_tokens is None:
            split_special_tokens = self.split_special_tokens
        self._tokenizer.encode_special_tokens = split_special_tokens
        batch = [text] if isinstance(text, str) else list(text)
        encodings = self._tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": [e.ids for e in encodings]}
        if "token_type_ids" in self.model_input_names:
            out["token_type_ids"] = [e.type_ids for e in encodings]
        if "attention_mask" in self.model_input_names:
            out["attention_mask"] = [e.attention_mask for e in encodings]
        return {k: v[0] for k, v in out.items()} if isinstance(text, str) else out

    def encode(
        self, text: str, add_special_tokens: bool = True, split_special_tokens: bool | None = None
    ) -> list[int]:
        return self(
            text, add_special_tokens=add_special_tokens, split_special_tokens=split_special_tokens
        )["input_ids"]

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[str]:
        self._tokenizer.encode_special_tokens = self.split_special_tokens
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).tokens

    def decode(
        self,
        token_ids: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> Any:
        """Text for a list of ids (or a list of such lists)."""
        if hasattr(token_ids, "tolist"):
            token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if token_ids and isinstance(token_ids[0], (list, tuple)):
            return [
                self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces)
                for ids in token_ids
            ]
        text = self._tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        # Like transformers: the clean-up would corrupt BPE output, so BPE skips it.
        if clean_up_tokenization_spaces and (
            type(self._tokenizer.model).__name__ != "BPE" or self._clean_up_bpe
        ):
            text = _clean_up_tokenization(text)
        return text

    # Chat templates ---------------------------------------------------------------------

    def get_chat_template(self, chat_template: str | None = None, tools: list | None = None) -> str:
        if isinstance(self.chat_template, dict):
            if chat_template in self.chat_template:
                return self.chat_template[chat_template]
            if chat_template is None:
                name = (
                    "tool_use"
                    if tools is not None and "tool_use" in self.chat_template
                    else "default"
                )
                if name not in self.chat_template:
                    raise ValueError(
                        "This tokenizer has several chat templates and none is named 'default'."
                    )
                return self.chat_template[name]
            return chat_template
        if chat_template is None:
            if self.chat_template is None:
                raise ValueError("This tokenizer has no chat_template and no template was passed.")
            return self.chat_template
        return chat_template

    def apply_chat_template(
        self,
        conversation: list[dict],
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Render ``conversation`` with the chat template, as transformers renders it.

        Like transformers 5: ``tokenize=True`` (the default) returns ``{"input_ids": ...,
        "attention_mask": ...}``, or just the ids with ``return_dict=False``.
        """
        for option in (
            "continue_final_message",
            "return_assistant_tokens_mask",
            "sanitize_control_tokens",
        ):
            if kwargs.pop(option, False):
                raise NotImplementedError(
                    f"LiteTokenizer.apply_chat_template does not support {option}."
                )
        if tools is not None and not all(isinstance(tool, dict) for tool in tools):
            raise ValueError("LiteTokenizer takes tools as JSON schemas (dicts) only.")
        if not conversation:
            raise ValueError(
                "Cannot apply chat template to an empty conversation. Provide at least one message."
            )
        template = _compile(self.get_chat_template(chat_template, tools))
        messages = [{k: v for k, v in dict(m).items() if v is not None} for m in conversation]
        messages = _with_reasoning_aliases(_plain(messages))
        variables = _plain({**self.special_tokens_map, **kwargs})
        text = template.render(
            messages=messages,
            tools=_plain(tools),
            documents=_plain(documents),
            add_generation_prompt=add_generation_prompt,
            **variables,
        )
        if not tokenize:
            return text
        out = self(text, add_special_tokens=False)
        return out if return_dict else out["input_ids"]

    def __repr__(self) -> str:
        return (
            f"LiteTokenizer(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
            f"special_tokens={self.special_tokens_map})"
        )


def _clean_up_tokenization(text: str) -> str:
    for before, after in (
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
        (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ):  # fmt: skip
        text = text.replace(before, after)
    return text


def _plain(value: Any) -> Any:
    """Template data rebuilt from plain JSON types (as transformers does, for the sandbox)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


def _with_reasoning_aliases(messages: list[dict]) -> list[dict]:
    """Fill ``reasoning_content`` (and ``thinking``) from whichever name a message uses."""
    out = []
    for message in messages:
        reasoning = next(
            (message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None
        )
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


@lru_cache
def _compile(template: str) -> Any:
    """Compile a chat template in the sandboxed environment transformers uses."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: Any = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        # Jinja's own tojson escapes HTML characters; transformers' does not.
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    class TemplateDict:
        def __call__(self, *args: Any, **kwargs: Any) -> dict:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        # Namespaces reject underscore attributes, so templates cannot reach CPython internals.
        def __init__(*args: Any, **kwargs: Any) -> None:
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}."
                )

    class GenerationTag(Extension):
        # `{% generation %}` marks the assistant's text for training masks; here it only renders.
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller: Any) -> str:
            return caller()

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env.from_string(template)
