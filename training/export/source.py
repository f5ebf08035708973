"""Reading a model folder for export: its ``config.json`` and its safetensors weights.

Only safetensors are read (``torch.load`` of a pickled ``.bin`` would run whatever the file
holds). Weights are indexed by their headers first, so shapes are known before a single
tensor is loaded, and each tensor is loaded alone when it is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .common import ExportError

_DTYPES = {"F64", "F32", "F16", "BF16"}


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``, or ExportError naming ``what`` is wrong with it."""
    if not path.is_file():
        raise ExportError(f"{path.parent} holds no {path.name}, so it is not a {what}.")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} cannot be read as JSON ({type(exc).__name__}).") from None
    if not isinstance(value, dict):
        raise ExportError(f"{path} does not hold a JSON object.")
    return value


@dataclass(frozen=True)
class TensorRef:
    """One tensor of a safetensors file: where it is and what shape it has."""

    file: Path
    name: str
    shape: tuple[int, ...]
    dtype: str


def _header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked enough to trust its shapes."""
    from model.runtime.model_files import ModelFileError, check_safetensors

    try:
        header = check_safetensors(path)
    except ModelFileError as exc:
        raise ExportError(f"{exc}.") from None
    for name, info in header.items():
        if name != "__metadata__" and not (isinstance(info, dict) and info.get("dtype") in _DTYPES
                                           and isinstance(info.get("shape"), list)):
            raise ExportError(f"The weights file {path} holds a tensor we cannot read ({name}).")
    return header


def index_weights(folder: Path, stem: str = "model") -> dict[str, TensorRef]:
    """Every tensor of the folder's ``{stem}*.safetensors`` files (or those its index names)."""
    index = folder / f"{stem}.safetensors.index.json"
    weight_map: dict[str, Any] = {}
    if index.is_file():
        listed = read_json(index, "sharded checkpoint index").get("weight_map")
        if not isinstance(listed, dict) or not listed:
            raise ExportError(f"{index} has no weight_map.")
        weight_map = listed
        files = sorted({str(v) for v in weight_map.values()})
        missing = [name for name in files if not (folder / name).is_file()]
        if missing:
            raise ExportError(f"{folder} is missing the weight file {missing[0]} that its index names.")
        paths = [folder / name for name in files]
    else:
        paths = sorted(folder.glob(f"{stem}*.safetensors"))
    if not paths:
        bins = sorted(p.name for p in folder.glob("*.bin"))
        hint = f" ({bins[0]} is a pickle; save the model with safe_serialization=True)" if bins else ""
        raise ExportError(f"{folder} holds no safetensors weights{hint}.")
    refs: dict[str, TensorRef] = {}
    for path in paths:
        for name, info in _header(path).items():
            if name != "__metadata__":
                refs[name] = TensorRef(path, name, tuple(int(n) for n in info["shape"]), info["dtype"])
    if index.is_file():
        absent = sorted(set(weight_map) - set(refs))
        if absent:
            raise ExportError(f"{folder} is missing the tensor {absent[0]} that its index names.")
    return refs


def loader(ref: TensorRef) -> Callable[[], np.ndarray]:
    """A function that loads ``ref`` as a float32 array (bf16 included) when called."""

    def load() -> np.ndarray:
        from safetensors import safe_open

        try:
            with safe_open(str(ref.file), framework="pt") as f:
                return f.get_tensor(ref.name).float().numpy()
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise ExportError(f"{ref.file} is damaged: the tensor {ref.name} cannot be read ({exc}).") from None

    return load


def config_get(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` present in ``config`` (families name the same thing differently)."""
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default
