"""Model folders as GGUF files for llama.cpp: our own converter on the ``gguf`` package.

Two calls (``starchat export-gguf`` on the command line, ``training.export.cli``):

- ``export_folder(folder, out_path, qtype="f16") -> Path``: a transformers model folder
  (``config.json`` + safetensors weights + a byte-level BPE ``tokenizer.json``, as
  ``starchat train`` writes it) becomes one GGUF model file at ``out_path``. Architectures:
  ``llama`` (SmolLM2, the embedded model, among them), ``qwen2``, ``starcoder2`` and
  ``gpt_bigcode`` (llama.cpp's ``starcoder``). ``qtype`` is ``f32``, ``f16``, ``q8_0``,
  ``q4_0`` or ``q4_1``; norms, biases, 1-D tensors, learned positions and rows that are not whole
  quantization blocks stay F32 (F16 for the last), as llama.cpp's own converter keeps them;
  in ``q4_0``/``q4_1`` files the output layer is Q8_0. ``out_path`` may not lie inside ``folder``.
- ``export_lora(adapter_dir, base_gguf, out_path, qtype="f16") -> Path``: a peft LoRA
  adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) becomes a
  llama.cpp adapter GGUF for the base model file ``base_gguf`` (``"default"``: the embedded
  model's file), loaded at run time on top of it (``CommonParams.lora_adapters``).
  ``qtype`` is ``f32``, ``f16`` or ``q8_0`` (what llama.cpp applies) for the lora_a/lora_b
  tensors; rows that are not whole blocks stay F16 (F32 in ``f32`` files). The adapter is
  checked against the base file (architecture, module sizes, vocabulary) before anything
  is written; DoRA, trained biases, ``modules_to_save`` and trained token rows are refused.

It writes to a temporary file beside ``out_path`` and renames it when complete, so an earlier
file there is replaced only by a whole new one; the input is only read. Bad input (an
unsupported architecture, a missing or malformed config, weights or tokenizer, too little
disk space) raises ``ExportError``, a ``ValueError`` whose message is one sentence for the
user.

The modules: ``common`` (the types and ``ExportError``), ``source`` (reading a folder),
``archs`` (one class per architecture: metadata, tensor names through
``gguf.TensorNameMap``, Llama's q/k row order), ``vocab`` (the tokenizer), ``writer``
(tensor types, the streaming atomic write), ``model`` (the conversion), ``lora`` (adapters),
``cli`` (the command). Modelled on llama.cpp's ``convert_hf_to_gguf.py``; see
docs/export.md.
"""

from __future__ import annotations

from pathlib import Path

from .common import LORA_QTYPES, QTYPES, ExportError


def export_folder(folder: str | Path, out_path: str | Path, qtype: str = "f16") -> Path:
    """Convert the model folder ``folder`` to a GGUF file at ``out_path``; returns its path."""
    from .model import convert_folder

    return convert_folder(Path(folder), Path(out_path), qtype)


def export_lora(adapter_dir: str | Path, base_gguf: str | Path, out_path: str | Path, qtype: str = "f16",
                completion_scale: float | None = None) -> Path:
    """Convert the peft LoRA adapter in ``adapter_dir`` to a llama.cpp adapter GGUF file at
    ``out_path`` for the base model file ``base_gguf`` (``"default"``: the embedded model's);
    returns its path. ``completion_scale``: how much of it inline completions apply unless
    they say (``model.runtime.spec.COMPLETION_SCALE_KEY``; None: not written, which means 1)."""
    from .lora import convert_adapter

    return convert_adapter(Path(adapter_dir), base_path(base_gguf), Path(out_path), qtype, completion_scale)


def qtype_like(gguf_path: str | Path) -> str:
    """The output type of ours closest to the GGUF file's own (``q4_1`` for the embedded
    model); ``q8_0`` for a kind we do not write (k-quants, i-quants)."""
    from model.runtime.gguf_meta import read_metadata

    from .writer import FILE_TYPES

    ours = {int(file_type): qtype for qtype, file_type in FILE_TYPES.items()}
    return ours.get(read_metadata(gguf_path).get("general.file_type", -1), "q8_0")


def merged_qtype(base_gguf: str | Path) -> str:
    """The type a LoRA adapter merged into ``base_gguf`` is written as: the base's own
    (``qtype_like``), but never below 8 bits. An adapter's change to a weight is far smaller
    than a 4-bit step, so re-quantizing the merged weights to 4 bits rounds most of it away:
    measured on the embedded Q4_1 model (docs/adapt.md), next-line exact match 52 of 600
    positions for the base, 62 with the adapter on top at run time, 53 merged and written as
    Q4_1, and kept when written as Q8_0."""
    qtype = qtype_like(base_gguf)
    return "q8_0" if qtype in ("q4_0", "q4_1") else qtype


def base_path(base: str | Path) -> Path:
    """The base GGUF file a ``--base`` value names: any GGUF model spec (a path, or ``default``
    for the embedded model), parsed by ``model.runtime.spec`` like every other spec."""
    from model.runtime.spec import ModelSpec, ModelSpecError

    try:
        spec = ModelSpec.parse(str(base))
    except ModelSpecError as exc:
        raise ExportError(str(exc)) from None
    if spec.kind != "gguf" or spec.adapter is not None:
        return Path(base)  # Base() says in one sentence why it is no base GGUF file
    return Path(spec.location)


__all__ = ["LORA_QTYPES", "QTYPES", "ExportError", "export_folder", "export_lora"]
