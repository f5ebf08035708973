"""The folder's tokenizer written into the GGUF file, the way llama.cpp's converter does it.

Byte-level BPE (``tokenizer.json``) only, which covers the families we train. The token list
is the tokenizer's own (ids without a token become ``[PADn]``, unused); added tokens are
control tokens when transformers marks them special or they look like ``<|...|>`` (the
StarChat tokens ``starchat train`` adds among them), user-defined otherwise. Merges, the
bos/eos/unk/pad ids and the chat template come from ``gguf.SpecialVocab``; whether a bos or
eos is added is what the tokenizer itself does to a text.

``tokenizer.ggml.pre`` names the split rule llama.cpp applies before BPE. Its converter
recognises a tokenizer by hashing the ids it gives for one test text, from a table of known
tokenizers. We do the same with the entries for the families we train (hashes from llama.cpp's
``convert_hf_to_gguf.py``), then take the value of the GGUF a folder was converted from
(``starchat-source.txt``, written by ``model.runtime.loading``), and then recognise the split
rule transformers actually runs (``transformers`` may replace the one in tokenizer.json with
its model class's own, Qwen2's for example) among those llama.cpp implements. Anything else is
refused rather than guessed: a wrong rule tokenizes differently without any error.
"""

from __future__ import annotations

import json
import re
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf

from .common import ExportError

# llama.cpp's test text (convert_hf_to_gguf.py, get_vocab_base_pre).
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated)"
    " ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～"
    " ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there,"
    " 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
KNOWN_HASHES = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",  # StarCoder2
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5/Qwen2
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen2.5/Qwen3
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}
# The split rules of tokenizer.json that llama.cpp implements under these names.
_GPT2_LIKE = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_QWEN2_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_LLAMA3_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
                 "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
SOURCE_FILE = "starchat-source.txt"


def _matches(rule: Any, want: dict[str, Any]) -> bool:
    return isinstance(rule, dict) and all(rule.get(k) == v for k, v in want.items())


def _rule_name(rule: Any) -> str | None:
    """The llama.cpp name of a ``pre_tokenizer`` from tokenizer.json, or None."""
    if _matches(rule, _GPT2_LIKE):
        return "gpt-2"
    parts = rule.get("pretokenizers") if _matches(rule, {"type": "Sequence"}) else None
    if not isinstance(parts, list) or len(parts) != 2:
        return None
    first, byte_level = parts
    if _matches(first, {"type": "Digits", "individual_digits": True}) and _matches(byte_level, _GPT2_LIKE):
        return "starcoder"
    if not (_matches(first, {"type": "Split", "behavior": "Isolated", "invert": False})
            and _matches(byte_level, {**_GPT2_LIKE, "use_regex": False})):
        return None
    regex = (first.get("pattern") or {}).get("Regex")
    return {_QWEN2_REGEX: "qwen2", _LLAMA3_REGEX: "llama-bpe"}.get(str(regex))


def _source_pre(folder: Path) -> str | None:
    """``tokenizer.ggml.pre`` of the GGUF file this folder was de-quantized from, if any."""
    source = folder / SOURCE_FILE
    try:
        path = Path(source.read_text(encoding="utf-8").strip())
        field = gguf.GGUFReader(str(path)).get_field(gguf.Keys.Tokenizer.PRE) if path.is_file() else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return str(field.contents()) if field is not None else None


def pre_tokenizer(tokenizer: Any, folder: Path) -> str:
    """The ``tokenizer.ggml.pre`` value for this tokenizer (see the module docstring)."""
    digest = sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    if digest in KNOWN_HASHES:
        return KNOWN_HASHES[digest]
    if (name := _source_pre(folder)) is not None:
        return name
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    # NFC is what Qwen2's own tokenizer adds; llama.cpp's qwen2 files come with it too.
    normalizer = state.get("normalizer")
    if normalizer in (None, {"type": "NFC"}) and (name := _rule_name(state.get("pre_tokenizer"))) is not None:
        return name
    raise ExportError(f"The tokenizer of {folder} splits text in a way llama.cpp's converter does not "
                      f"recognise (hash {digest[:12]}), so its GGUF would tokenize differently.")


def _looks_special(token: str) -> bool:
    return token.startswith(("<|", "<｜")) and token.endswith(("|>", "｜>"))


def load_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer through transformers, as the torch path loads it."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ExportError(f"{folder} holds no tokenizer.json (only byte-level BPE tokenizers can be exported).")
    try:
        model_type = json.loads(path.read_text(encoding="utf-8")).get("model", {}).get("type")
    except (OSError, ValueError, AttributeError):
        raise ExportError(f"{path} cannot be read as a tokenizer.") from None
    if model_type != "BPE":
        raise ExportError(f"The tokenizer of {folder} is {model_type or 'unknown'}, not byte-level BPE, "
                          "which is all export-gguf supports.")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:  # transformers raises many kinds for a broken tokenizer folder
        raise ExportError(f"The tokenizer of {folder} cannot be loaded ({type(exc).__name__}).") from None


# llama.cpp's Phi-3 workaround: when a file's general.name contains "phi-3" or "phi3" it sets
# attributes on these tokens, looked up by text, and the load fails ("error loading model
# vocabulary: _Map_base::at") when one of them is missing from the vocabulary.
PHI3_NAME = re.compile(r"phi-?3", re.IGNORECASE)
PHI3_TOKENS = ("</s>", "<unk>", "<s>", "<|endoftext|>")


def model_name(name: str, tokens: list[str]) -> str:
    """The ``general.name`` to write: ``name``, unless llama.cpp would take it for a Phi-3 file
    whose vocabulary lacks the Phi-3 tokens (then "phi-3" is written as "phi 3")."""
    if PHI3_NAME.search(name) and not set(PHI3_TOKENS) <= set(tokens):
        return PHI3_NAME.sub(lambda m: m.group(0)[:3] + " 3", name)
    return name


def write_vocab(w: gguf.GGUFWriter, folder: Path, vocab_size: int) -> list[str]:
    """Write the ``tokenizer.*`` fields for the folder's tokenizer and a model of ``vocab_size``;
    returns the token list."""
    tokenizer = load_tokenizer(folder)
    vocab: dict[str, int] = tokenizer.get_vocab()
    if not vocab or max(vocab.values()) >= vocab_size:
        raise ExportError(f"The tokenizer of {folder} has ids up to {max(vocab.values(), default=0)} but the "
                          f"model's vocabulary has {vocab_size} entries.")
    reverse = {i: t for t, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        kind = gguf.TokenType.NORMAL
        if token is None:
            token, kind = f"[PAD{i}]", gguf.TokenType.UNUSED
        elif i in added:
            if not added[i].normalized:  # llama.cpp expects added tokens pre-normalized
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            kind = gguf.TokenType.CONTROL if added[i].special or _looks_special(token) else gguf.TokenType.USER_DEFINED
        tokens.append(token)
        types.append(kind)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre_tokenizer(tokenizer, folder))
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise ExportError(f"The tokenizer.json of {folder} holds no BPE merges.")
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    special.add_special_token["bos"] = len(full) > len(plain) and full[0] == tokenizer.bos_token_id
    special.add_special_token["eos"] = len(full) > len(plain) and full[-1] == tokenizer.eos_token_id
    special.add_to_gguf(w, quiet=True)
    return tokens
