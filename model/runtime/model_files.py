"""Check a model's files before anything heavy reads them: one sentence per problem.

Model files lie: a download cut short, a zero-byte file, a config that is not JSON, a
folder without a tokenizer. Left to transformers, tokenizers or llama.cpp, each surfaces
as a traceback or a generic error deep inside a load, after seconds of imports. These
checks read headers only (no tensors, no torch) and name the file and what is wrong with
it. ``preflight`` runs in the worker before it opens its socket, so a bad spec ends the
worker at once with that sentence, and no worker is left behind waiting for clients.

GGUF files: the header (``gguf_meta.read_metadata``: magic, version, keys, bounded sizes)
and an architecture. What only llama.cpp sees (tensor data cut short, a vocabulary that does
not match the weights, memory) is explained by ``llamacpp_errors`` when its load fails.

Folders: ``config.json`` (JSON object naming a model type), a tokenizer
(``tokenizer.json``, ``tokenizer.model`` or ``vocab.json`` + ``merges.txt``; JSON files
must parse), and weights (safetensors files whose header and size agree, or a PyTorch
``.bin``).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from .gguf_meta import GGUFError, read_metadata

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # what the safetensors library itself accepts


class ModelFileError(ValueError):
    """A model file is missing, empty, truncated or malformed; the message is one sentence."""


def _json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelFileError(f"{what} {path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        reason = "is empty" if not path.stat().st_size else (
            f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})")
        raise ModelFileError(f"{what} {path} {reason}") from None
    except OSError as exc:
        raise ModelFileError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None


def check_gguf(path: str | Path) -> dict:
    """The file's metadata when its header is sound; ModelFileError otherwise."""
    path = Path(path)
    try:
        meta = read_metadata(path)
    except GGUFError as exc:
        raise ModelFileError(str(exc)) from None
    if not isinstance(meta.get("general.architecture"), str):
        raise ModelFileError(f"{path.name} names no architecture (general.architecture), so it is not a model file")
    return meta


def check_folder(folder: str | Path) -> None:
    """Raise ModelFileError naming the first missing or malformed file of a model folder."""
    folder = Path(folder)
    config = _json_file(folder / "config.json", "The model config")
    if not isinstance(config, dict) or not (config.get("model_type") or config.get("architectures")):
        raise ModelFileError(f"The model config {folder / 'config.json'} names no model_type or architectures")
    _check_tokenizer(folder)
    _check_weights(folder)


def _check_tokenizer(folder: Path) -> None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file() and not isinstance(_json_file(folder / name, "The tokenizer file"), dict):
            raise ModelFileError(f"The tokenizer file {folder / name} is not a JSON object")
    if (folder / "tokenizer.json").is_file():
        data = _json_file(folder / "tokenizer.json", "The tokenizer file")
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise ModelFileError(f"The tokenizer file {folder / 'tokenizer.json'} has no tokenizer model in it")
        return
    if (folder / "tokenizer.model").is_file():
        if not (folder / "tokenizer.model").stat().st_size:
            raise ModelFileError(f"The tokenizer file {folder / 'tokenizer.model'} is empty")
        return
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        _json_file(folder / "vocab.json", "The tokenizer file")
        return
    raise ModelFileError(f"The model folder {folder} has no tokenizer (tokenizer.json, tokenizer.model, "
                         f"or vocab.json with merges.txt)")


def _check_weights(folder: Path) -> None:
    safetensors = sorted(folder.glob("*.safetensors"))
    for file in safetensors:
        check_safetensors(file)
    if safetensors or any(folder.glob("pytorch_model*.bin")) or any(folder.glob("*.pt")):
        return
    raise ModelFileError(f"The model folder {folder} has no weights (*.safetensors or pytorch_model.bin)")


def check_safetensors(path: Path) -> dict:
    """The header parses and every tensor lies inside the file; returns the header."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelFileError(f"The weights file {path} is {'empty' if not size else 'truncated'}"
                                     f" ({size} bytes)")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_SAFETENSORS_HEADER or 8 + length > size:
                raise ModelFileError(f"The weights file {path} is truncated or not safetensors "
                                     f"(its header claims {length} bytes of a {size}-byte file)")
            header = json.loads(f.read(length))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"The weights file {path} has a damaged header (not JSON)") from None
    except OSError as exc:
        raise ModelFileError(f"The weights file {path} cannot be read ({exc.strerror or exc})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"The weights file {path} has a damaged header (not a JSON object)")
    end = max((t["data_offsets"][1] for k, t in header.items()
               if k != "__metadata__" and isinstance(t, dict) and isinstance(t.get("data_offsets"), list)
               and len(t["data_offsets"]) == 2 and isinstance(t["data_offsets"][1], int)), default=0)
    if 8 + length + end > size:
        raise ModelFileError(f"The weights file {path} is truncated: its tensors need "
                             f"{8 + length + end} bytes, the file has {size}")
    return header


def preflight(kind: str, location: str) -> None:
    """Check a resolved spec's files (``ModelSpec.kind``/``location``); hub ids pass."""
    if kind == "gguf":
        check_gguf(location)
    elif kind == "folder":
        check_folder(location)
