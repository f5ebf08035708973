"""A model folder as one GGUF model file (``export_folder``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from .archs import Arch, arch_for
from .common import ExportError
from .source import TensorRef, index_weights, loader, read_json
from .vocab import model_name, write_vocab
from .writer import FILE_TYPES, Planned, check_qtype, tensor_type, write_gguf

log = logging.getLogger(__name__)


def _load(ref: TensorRef, rows: np.ndarray | None) -> Callable[[], np.ndarray]:
    load = loader(ref)
    return load if rows is None else lambda: load()[rows]


def _constant(data: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: data


def plan_tensors(arch: Arch, refs: dict[str, TensorRef], qtype: str) -> list[Planned]:
    """Every output tensor, named by gguf's map, with its type and (lazy) data."""
    planned: list[Planned] = []
    for hf_name, ref in refs.items():
        if arch.skip(hf_name):
            continue
        name = arch.gguf_name(hf_name)
        if name is None:
            raise ExportError(f"The tensor {hf_name} has no place in llama.cpp's {arch.name} "
                              "(a different model class, or a layer beyond num_hidden_layers).")
        planned.append(Planned(name, ref.shape, tensor_type(name, ref.shape, qtype, arch.tied),
                               _load(ref, arch.row_order(hf_name))))
    for name, data in arch.extra_tensors():
        planned.append(Planned(name, data.shape, gguf.GGMLQuantizationType.F32, _constant(data)))
    _check_complete(arch, planned)
    return planned


def _check_complete(arch: Arch, planned: list[Planned]) -> None:
    """Every layer holds the same kinds of tensors, and the embedding and head are there."""
    s = arch.sizes
    names = {p.name: p.shape for p in planned}
    embd = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.TOKEN_EMBD] + ".weight"
    if names.get(embd) != (s.vocab_size, s.n_embd):
        raise ExportError(f"The token embedding is missing or not {s.vocab_size}x{s.n_embd} as config.json says.")
    for kind in (gguf.MODEL_TENSOR.OUTPUT_NORM, *(() if arch.tied else (gguf.MODEL_TENSOR.OUTPUT,))):
        if gguf.TENSOR_NAMES[kind] + ".weight" not in names:
            raise ExportError(f"The weights lack the model's {gguf.TENSOR_NAMES[kind]} tensor.")
    per_layer = [sorted(n.split(".", 2)[2] for n in names if n.startswith(f"blk.{i}.")) for i in range(s.n_layers)]
    for i, layer in enumerate(per_layer):
        if not layer or layer != per_layer[0]:
            missing = sorted(set(per_layer[0]) ^ set(layer)) or ["all of its tensors"]
            raise ExportError(f"Layer {i} of the weights is incomplete ({missing[0]}).")


def convert_folder(folder: Path, out: Path, qtype: str = "f16") -> Path:
    """See ``training.export.export_folder``."""
    check_qtype(qtype)
    folder = folder.expanduser()
    if not folder.is_dir():
        raise ExportError(f"The model folder {folder} does not exist.")
    out = out.expanduser()
    if out.resolve().is_relative_to(folder.resolve()):
        raise ExportError(f"{out} lies inside the model folder; write the GGUF file elsewhere.")
    config = read_json(folder / "config.json", "model folder")
    arch = arch_for(config)
    planned = plan_tensors(arch, index_weights(folder), qtype)

    def metadata(w: gguf.GGUFWriter) -> None:
        w.add_type(gguf.GGUFType.MODEL)
        arch.write_metadata(w)
        w.add_file_type(FILE_TYPES[qtype])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        tokens = write_vocab(w, folder, arch.sizes.vocab_size)
        w.add_name(model_name(folder.resolve().name, tokens))

    log.info("Writing %s (%s, %s, %d tensors)", out, arch.name, qtype, len(planned))
    return write_gguf(out, arch.name, metadata, planned)
