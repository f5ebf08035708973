"""Read a GGUF file's header (its metadata keys, and its tensor table where asked) without
loading tensors or numpy.

Why not ``gguf.GGUFReader``: it maps and indexes every tensor and array, ~8 s for the
embedded model on a busy 2-core machine; the worker only needs a few scalars (architecture,
context length, name) before it hands the file to llama.cpp, plus a sentence when the file
is not a GGUF at all or ends inside its header. Arrays are skipped unless asked for.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_STRING = 1 << 26  # a key or value longer than 64 MiB means a damaged header
# More keys or array items than any model has: a damaged (or hostile) header, refused before
# reading them one by one would take minutes.
MAX_KEYS = 1 << 16
MAX_ARRAY = 1 << 24


class GGUFError(ValueError):
    """The file is not a readable GGUF file; the message is one sentence for the user."""


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _read(f, 8))
    if n > MAX_STRING:
        raise GGUFError("a string of impossible length")
    return _read(f, n).decode("utf-8", errors="replace")


def _value(f: BinaryIO, kind: int, keep_arrays: bool) -> Any:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item_kind, count = struct.unpack("<IQ", _read(f, 12))
        if count > MAX_ARRAY:
            raise GGUFError(f"an array of {count} items, more than any model has")
        if item_kind in _SCALARS and not keep_arrays:
            f.seek(struct.calcsize(_SCALARS[item_kind]) * count, 1)
            return count
        items = [_value(f, item_kind, keep_arrays) for _ in range(count)]
        return items if keep_arrays else count
    raise GGUFError(f"a value of unknown type {kind}")


def read_metadata(path: str | Path, arrays: tuple[str, ...] = ()) -> dict[str, Any]:
    """The metadata keys of a GGUF file; arrays are given as their length unless in ``arrays``.

    Raises GGUFError with a sentence when the file is not GGUF or its header is cut short.
    """
    return read_header(path, arrays)[0]


def read_tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's name and shape (ggml order: the row length first), from the header."""
    return {name: shape for name, (shape, _kind) in read_header(path, tensors=True)[1].items()}


def read_header(path: str | Path, arrays: tuple[str, ...] = (),
                tensors: bool = False) -> tuple[dict[str, Any], dict[str, tuple[tuple[int, ...], int]]]:
    """(metadata keys as ``read_metadata`` gives them, and with ``tensors`` each tensor's
    name -> (shape in ggml order, ``ne0`` first; ggml type number)). Nothing else is read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
            if not magic:
                raise GGUFError(f"{path.name} is empty (0 bytes)")
            if magic != MAGIC:
                raise GGUFError(f"{path.name} is not a GGUF file (it does not start with 'GGUF')")
            version, n_tensors, kv_count = struct.unpack("<IQQ", _read(f, 20))
            if version not in (2, 3):
                raise GGUFError(f"{path.name} is GGUF version {version}; llama.cpp reads versions 2 and 3")
            if kv_count > MAX_KEYS:
                raise GGUFError(f"{path.name} has a damaged header: it declares {kv_count} metadata keys")
            meta: dict[str, Any] = {"GGUF.version": version}
            for _ in range(kv_count):
                key = _string(f)
                (kind,) = struct.unpack("<I", _read(f, 4))
                meta[key] = _value(f, kind, key in arrays)
            infos: dict[str, tuple[tuple[int, ...], int]] = {}
            for _ in range(n_tensors if tensors else 0):
                name = _string(f)
                (n_dims,) = struct.unpack("<I", _read(f, 4))
                if n_dims > 8:
                    raise GGUFError(f"{path.name} has a damaged tensor table")
                shape = struct.unpack(f"<{n_dims}Q", _read(f, 8 * n_dims))
                kind, _offset = struct.unpack("<IQ", _read(f, 12))
                infos[name] = (tuple(shape), kind)
            return meta, infos
    except EOFError:
        raise GGUFError(f"{path.name} is truncated: it ends inside its header") from None
    except GGUFError as exc:
        if str(exc).startswith(path.name):
            raise
        raise GGUFError(f"{path.name} has a damaged header: {exc}") from None
    except OSError as exc:
        raise GGUFError(f"{path.name} cannot be read ({exc.strerror or exc})") from None
