"""Tensor types and the GGUF write: streamed one tensor at a time, atomically.

All tensor infos go into the header first (their shapes and types are known from the
safetensors headers), then each tensor is loaded, converted and written, so memory stays
at one tensor. The file is written beside the target under a temporary name and renamed
when complete: the target is either the old file or the whole new one, never half of one.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from .common import QTYPES, ExportError

Q = gguf.GGMLQuantizationType
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
              "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1}
_MAIN = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1}
_ALWAYS_F32 = (gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.POS_EMBD] + ".",)
_OUTPUT = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.OUTPUT] + ".weight"
_TOKEN_EMBD = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.TOKEN_EMBD] + ".weight"


@dataclass
class Planned:
    """One tensor of the output: its name, shape (rows last-but-one), type and loader."""

    name: str
    shape: tuple[int, ...]
    qtype: Q
    load: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return int(np.prod(self.shape)) // block * size


def check_qtype(qtype: str) -> str:
    if qtype not in QTYPES:
        raise ExportError(f"Unknown output type {qtype!r}: use {', '.join(QTYPES)}.")
    return qtype


def tensor_type(name: str, shape: tuple[int, ...], qtype: str, tied: bool) -> Q:
    """The type llama.cpp's converter would give this tensor in a ``qtype`` file.

    Norms, biases and other 1-D tensors and learned positions stay F32; in ``q4_0`` and
    ``q4_1`` files (the embedded model's kind) the output layer (the embedding, when it doubles as one) is Q8_0, since llama.cpp's own
    quantizer keeps it at a higher precision too; rows that are not whole blocks fall back
    to F16, as llama.cpp's converter does.
    """
    if len(shape) < 2 or not name.endswith((".weight", ".lora_a", ".lora_b")) or name.startswith(_ALWAYS_F32) \
            or name.endswith("_norm.weight"):
        return Q.F32
    kind = _MAIN[qtype]
    if kind in (Q.Q4_0, Q.Q4_1) and (name == _OUTPUT or (tied and name == _TOKEN_EMBD)):
        kind = Q.Q8_0
    if shape[-1] % gguf.GGML_QUANT_SIZES[kind][0]:
        kind = Q.F16
    return kind


def _encode(data: np.ndarray, qtype: Q) -> np.ndarray:
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype)


def write_gguf(out: Path, arch_name: str, metadata: Callable[[gguf.GGUFWriter], None],
               tensors: list[Planned]) -> Path:
    """Write a GGUF file at ``out``: ``metadata`` adds the key/values, ``tensors`` the data."""
    out = out.expanduser()
    if out.is_dir():
        raise ExportError(f"{out} is a folder; give the path of the .gguf file to write.")
    if not out.parent.is_dir():
        raise ExportError(f"The folder {out.parent} does not exist.")
    need = sum(t.nbytes for t in tensors) + (64 << 20)  # the tensors plus room for the vocabulary
    if shutil.disk_usage(out.parent).free < need:
        raise ExportError(f"Not enough free disk space in {out.parent} for {out.name} "
                          f"(about {need >> 20} MiB needed).")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    writer = gguf.GGUFWriter(tmp, arch_name)
    try:
        metadata(writer)
        for t in tensors:
            dtype = {Q.F32: np.float32, Q.F16: np.float16}.get(t.qtype, np.uint8)
            shape = gguf.quant_shape_to_byte_shape(t.shape, t.qtype) if dtype is np.uint8 else t.shape
            writer.add_tensor_info(t.name, shape, np.dtype(dtype), t.nbytes,
                                   raw_dtype=t.qtype if dtype is np.uint8 else None)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in tensors:
            data = t.load()
            if tuple(data.shape) != t.shape:
                raise ExportError(f"The tensor {t.name} has shape {data.shape}, not the {t.shape} its header says.")
            writer.write_tensor_data(_encode(data, t.qtype))
        writer.close()
        os.replace(tmp, out)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ExportError(f"The disk filled up while writing {out.name}; nothing was written.") from None
        raise ExportError(f"Cannot write {out}: {exc.strerror or exc}.") from None
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out
