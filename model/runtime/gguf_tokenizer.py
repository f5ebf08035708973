"""The tokenizer of a GGUF file as a ``tokenizer.json`` folder, for the light tokenizer.

llama.cpp runs a GGUF file as it is, but the prompt is built by our chat format as token
ids (content tokenized as data, the budget counted with the model's own tokenizer), so the
worker needs the file's tokenizer on the Python side. transformers can rebuild it from the
file's ``tokenizer.*`` fields (every tokenizer kind llama.cpp writes: byte-level BPE,
SentencePiece, Unigram); that costs an ``import transformers`` (and torch) of several
seconds, so it runs once per file in a child process and the result is cached under the
cache dir, keyed by the file's identity. Later starts load the folder with
``model.prompt.tokenizer`` in ~0.2 s, and the worker itself never imports torch.

Run as ``python -m model.runtime.gguf_tokenizer FILE.gguf TARGET_DIR`` (what ``tokenizer_folder``
does).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .gguf_meta import read_metadata
from .paths import file_cache_folder, publish_folder

CACHE_FORMAT = "2"  # 2: control tokens with non-ASCII text keep their ids (_restore_control_tokens)
CONVERT_TIMEOUT = float(os.environ.get("STARCHAT_TOKENIZER_CONVERT_TIMEOUT", 300))


def _cache_folder(gguf: Path) -> Path:
    return file_cache_folder(gguf, "tokenizers", f"tok{CACHE_FORMAT}")


def tokenizer_folder(gguf: str | Path) -> Path:
    """A folder with the file's tokenizer.json and tokenizer_config.json, converting once."""
    gguf = Path(gguf)
    target = _cache_folder(gguf)
    if (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "model.runtime.gguf_tokenizer", str(gguf), str(target)],
        capture_output=True, text=True, timeout=CONVERT_TIMEOUT,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    if proc.returncode != 0 or not (target / "tokenizer.json").is_file():
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {proc.returncode}"
        raise ValueError(f"the tokenizer of {gguf.name} cannot be read ({reason})")
    return target


def convert(gguf: Path, target: Path) -> None:
    """Save the GGUF file's tokenizer as a tokenizer folder (atomically)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ValueError as exc:
        if "is not supported yet" not in str(exc):
            raise
        tokenizer = _from_tokenizer_fields(gguf)
    with publish_folder(target) as tmp:
        tokenizer.save_pretrained(tmp)
        _restore_control_tokens(gguf, Path(tmp))


def _restore_control_tokens(gguf: Path, folder: Path) -> None:
    """Give control tokens their own text and id back.

    transformers reads a byte-level BPE vocabulary from GGUF by mapping every token through
    the byte-to-unicode table, control tokens included, which GGUF files store as plain text:
    DeepSeek's ``<\uff5cbegin\u2581of\u2581sentence\uff5c>`` became a mangled string at its id
    and a new token past the vocabulary, which llama.cpp refuses ("Prompt contains invalid
    tokens"). Here each control or user-defined token of the file gets its text at its id.
    """
    import json

    import gguf as gguf_lib

    # Our header reader: gguf.GGUFReader indexes every field and tensor (~2.5 s of a ~9 s
    # conversion for a 256k vocabulary; transformers has just done it once already).
    fields = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")
    meta = read_metadata(gguf, arrays=fields)
    tokens, types = meta.get(fields[0]), meta.get(fields[1])
    if not isinstance(tokens, list) or not isinstance(types, list):
        return
    control = {i: t for i, (t, kind) in enumerate(zip(tokens, types, strict=False))
               if kind in (gguf_lib.TokenType.CONTROL, gguf_lib.TokenType.USER_DEFINED)}
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data.get("model", {}).get("vocab")
    if not isinstance(vocab, dict):
        return
    by_id = {i: t for t, i in vocab.items()}
    moved = {}
    for i, text in control.items():
        if by_id.get(i) not in (None, text):
            vocab.pop(by_id[i])
            vocab[text] = i
        for added in data.get("added_tokens", []):
            if added.get("content") == text and added.get("id") != i:
                moved[added["id"]] = i
                added["id"] = i
    if not moved and all(by_id.get(i) in (None, t) for i, t in control.items()):
        return
    data["added_tokens"] = [a for a in data.get("added_tokens", []) if a.get("id") not in moved or a.get("id") in control]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config_path = folder / "tokenizer_config.json"
    if moved and config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        decoder = config.get("added_tokens_decoder") or {}
        config["added_tokens_decoder"] = {str(moved.get(int(k), int(k))): v for k, v in decoder.items()}
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")


def _from_tokenizer_fields(gguf: Path):
    """The tokenizer from the file's ``tokenizer.*`` fields alone, for an architecture that
    transformers does not load from GGUF (llama.cpp's ``starcoder``, i.e. ``gpt_bigcode``):
    ``AutoTokenizer`` refuses the whole file over the model config it cannot map, although
    the tokenizer fields are the same kind every other file has."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        convert_gguf_tokenizer,
        get_gguf_tokenizer,
    )

    architecture, fields, config = get_gguf_tokenizer(str(gguf))
    backend, extra = convert_gguf_tokenizer(architecture, fields)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **{**config, **extra})


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m model.runtime.gguf_tokenizer FILE.gguf TARGET_DIR", file=sys.stderr)  # noqa: T201
        return 2
    try:
        convert(Path(args[0]), Path(args[1]))
    except Exception as exc:  # the parent reports the last line as the reason
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
