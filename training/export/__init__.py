"""Model folders as GGUF files for llama.cpp: our own converter on the ``gguf`` package.

One call (``starchat export-gguf`` on the command line, ``training.export.cli``):

- ``export_folder(folder, out_path, qtype="f16") -> Path``: a transformers model folder
  (``config.json`` + safetensors weights + a byte-level BPE ``tokenizer.json``, as
  ``starchat train`` writes it) becomes one GGUF model file at ``out_path``. Architectures:
  ``llama`` (SmolLM2, the embedded model, among them), ``qwen2``, ``starcoder2`` and
  ``gpt_bigcode`` (llama.cpp's ``starcoder``). ``qtype`` is ``f32``, ``f16``, ``q8_0`` or
  ``q4_0``; norms, biases, 1-D tensors, learned positions and rows that are not whole
  quantization blocks stay F32 (F16 for the last), as llama.cpp's own converter keeps them;
  in ``q4_0`` files the output layer is Q8_0. ``out_path`` may not lie inside ``folder``.

It writes to a temporary file beside ``out_path`` and renames it when complete, so an earlier
file there is replaced only by a whole new one; the input is only read. Bad input (an
unsupported architecture, a missing or malformed config, weights or tokenizer, too little
disk space) raises ``ExportError``, a ``ValueError`` whose message is one sentence for the
user.

The modules: ``source`` (reading a folder), ``archs`` (one class per architecture:
metadata, tensor names through ``gguf.TensorNameMap``, Llama's q/k row order), ``vocab``
(the tokenizer), ``writer`` (tensor types, the streaming atomic write), ``model`` (the
conversion), ``cli`` (the command). Modelled on llama.cpp's ``convert_hf_to_gguf.py``; see
docs/export.md.
"""

from __future__ import annotations

from pathlib import Path

QTYPES = ("f32", "f16", "q8_0", "q4_0")


class ExportError(ValueError):
    """The input cannot become a GGUF file; the message is one sentence for the user."""


def export_folder(folder: str | Path, out_path: str | Path, qtype: str = "f16") -> Path:
    """Convert the model folder ``folder`` to a GGUF file at ``out_path``; returns its path."""
    from .model import convert_folder

    return convert_folder(Path(folder), Path(out_path), qtype)


__all__ = ["QTYPES", "ExportError", "export_folder"]
