"""A peft LoRA adapter as a llama.cpp adapter GGUF for one base model file (``export_lora``).

llama.cpp's adapter format (its ``convert_lora_to_gguf.py``): ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, and for each adapted base tensor ``W`` of
the base file a pair ``W.lora_a`` (peft's A, rank x in) and ``W.lora_b`` (B, out x rank),
named by the same ``gguf`` map as the base, as F32, F16 or Q8_0 (rows that are not whole
blocks, such as B's rank-long ones, F16; everything F32 in an ``f32`` file). llama.cpp
adds ``scale * alpha / rank * B(Ax)`` with the rank read from the tensors. Where the base tensor was permuted on export (Llama's
q/k rows), B's rows get the same permutation, since ``P(BA) = (PB)A``. peft scalings that
are not ``alpha / rank`` (rsLoRA's ``alpha / sqrt(rank)``, per-module ``alpha_pattern``) are
folded into B, so llama.cpp's one formula gives peft's numbers.

The adapter is checked against the base file before anything is written: its architecture
must be one we convert, every adapted module must exist there with the adapter's in/out
sizes (which checks the width and layer count), and where the adapter folder or the base
folder it names says so, the architecture and vocabulary must agree. What llama.cpp cannot
apply is refused: DoRA, trained biases, fully trained modules (``modules_to_save``) and
trained token rows (``trainable_token_indices``, the StarChat tokens of a ``starchat train``
LoRA run: merge those and export the folder instead).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from model.runtime.spec import COMPLETION_SCALE_KEY

from .archs import Arch, Sizes, arch_class
from .common import LORA_QTYPES, ExportError
from .source import TensorRef, index_weights, loader, read_json
from .writer import Planned, tensor_type, write_gguf

log = logging.getLogger(__name__)
_PREFIX = "base_model.model."
_PAIR = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[^.]+)?\.weight$")


def _check_config(config: dict[str, Any], where: Path) -> tuple[float, int, bool]:
    """(alpha, rank, rsLoRA) of a LoRA we can convert; ExportError names what we cannot."""
    if config.get("peft_type") != "LORA":
        raise ExportError(f"{where} is a {config.get('peft_type') or 'non-peft'} adapter, not LoRA.")
    refusals = [
        ("use_dora", "DoRA weights"),
        ("lora_bias", "trained LoRA biases"),
        ("fan_in_fan_out", "fan_in_fan_out (Conv1D) weights"),
        ("modules_to_save", f"fully trained modules ({config.get('modules_to_save')})"),
        ("trainable_token_indices", "trained token embeddings (new tokens); merge the adapter and export the folder"),
    ]
    for key, what in refusals:
        if config.get(key):
            raise ExportError(f"The adapter in {where} holds {what}, which llama.cpp adapters cannot apply.")
    if config.get("bias", "none") != "none":
        raise ExportError(f"The adapter in {where} trains biases (bias={config['bias']!r}), which llama.cpp "
                          "adapters cannot apply.")
    alpha, rank = config.get("lora_alpha"), config.get("r")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0 \
            or not isinstance(rank, int) or rank <= 0:
        raise ExportError(f"The adapter_config.json in {where} needs a positive r and lora_alpha.")
    return float(alpha), rank, bool(config.get("use_rslora"))


class Base:
    """What a base GGUF file says about itself: architecture, sizes, tensor shapes, vocabulary."""

    def __init__(self, path: Path):
        from model.runtime.gguf_meta import GGUFError, read_header

        if not path.is_file():
            raise ExportError(f"The base model file {path} does not exist.")
        try:
            meta, self.tensors = read_header(path, tensors=True)
        except GGUFError as exc:
            raise ExportError(f"The base model file is unusable: {exc}.") from None
        self.path, self.arch_name = path, str(meta.get("general.architecture"))
        cls = arch_class(self.arch_name)
        if meta.get("general.type", "model") != "model" or cls is None:
            raise ExportError(f"{path.name} is a {self.arch_name} {meta.get('general.type', 'model')}; adapters "
                              "are converted for llama, qwen2, starcoder2 and starcoder models.")
        a = self.arch_name
        n_embd, n_head = int(meta.get(f"{a}.embedding_length", 0)), int(meta.get(f"{a}.attention.head_count", 0))
        if not n_embd or not n_head:
            raise ExportError(f"{path.name} lacks its {a} sizes.")
        self.n_vocab = int(meta.get("tokenizer.ggml.tokens") or meta.get(f"{a}.vocab_size") or 0)
        head_dim = int(meta.get(f"{a}.attention.key_length", n_embd // n_head))
        self.arch: Arch = cls.from_sizes(Sizes(
            n_layers=int(meta.get(f"{a}.block_count", 0)), n_embd=n_embd, n_head=n_head,
            n_head_kv=int(meta.get(f"{a}.attention.head_count_kv", n_head)),
            n_ff=int(meta.get(f"{a}.feed_forward_length", 0)), n_ctx=int(meta.get(f"{a}.context_length", 0)),
            vocab_size=self.n_vocab, head_dim=head_dim))

    def check_folder(self, folder: Path, what: str) -> None:
        """The adapter's own config/tokenizer files (or its base folder's) agree with this file."""
        from .archs import arch_for

        if (folder / "config.json").is_file():
            config = read_json(folder / "config.json", "model folder")
            try:
                theirs = arch_for(config)
            except ExportError:
                theirs = None
            if theirs is None or theirs.name != self.arch_name:
                raise ExportError(f"The adapter was trained on a {config.get('model_type')} model ({what}) but "
                                  f"{self.path.name} is {self.arch_name}.")
            s, t = theirs.sizes, self.arch.sizes
            if (s.n_layers, s.n_embd) != (t.n_layers, t.n_embd):
                raise ExportError(f"The adapter was trained on a model with {s.n_layers} layers of width {s.n_embd} "
                                  f"({what}) but {self.path.name} has {t.n_layers} of width {t.n_embd}.")
        if (folder / "tokenizer.json").is_file():
            try:
                tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
                ids = [*tokenizer["model"]["vocab"].values(), *(t["id"] for t in tokenizer.get("added_tokens", []))]
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise ExportError(f"The tokenizer.json of {what} cannot be read.") from None
            if ids and max(ids) >= self.n_vocab:
                raise ExportError(f"The adapter's tokenizer ({what}) has {max(ids) + 1} tokens but "
                                  f"{self.path.name} has {self.n_vocab}: it was trained with other tokens.")


def _pairs(refs: dict[str, TensorRef], where: Path) -> dict[str, dict[str, TensorRef]]:
    """Base module name -> {"A": ref, "B": ref}; any other tensor is refused."""
    pairs: dict[str, dict[str, TensorRef]] = {}
    for name, ref in refs.items():
        match = _PAIR.match(name.removeprefix(_PREFIX))
        if match is None:
            raise ExportError(f"The adapter in {where} holds {name}, which is not a LoRA A/B weight "
                              "(llama.cpp adapters carry those only).")
        pairs.setdefault(match["module"], {})[match["part"]] = ref
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise ExportError(f"The adapter in {where} has a lora_A or lora_B of {module} without the other.")
    if not pairs:
        raise ExportError(f"The adapter in {where} holds no LoRA weights.")
    return pairs


def _pattern_value(pattern: dict[str, Any], module: str, default: Any) -> Any:
    """peft's per-module override: the first key that matches the end of the module's name."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _scaled_b(load: Callable[[], np.ndarray], rows: np.ndarray | None, factor: float) -> Callable[[], np.ndarray]:
    def scaled() -> np.ndarray:
        b = load()
        b = b[rows] if rows is not None else b
        return b * np.float32(factor) if factor != 1.0 else b

    return scaled


def convert_adapter(adapter_dir: Path, base_gguf: Path, out: Path, qtype: str = "f16",
                    completion_scale: float | None = None) -> Path:
    """See ``training.export.export_lora``."""
    if qtype not in LORA_QTYPES:
        raise ExportError(f"Unknown adapter type {qtype!r}: llama.cpp applies {', '.join(LORA_QTYPES)} adapters.")
    adapter_dir, out = adapter_dir.expanduser(), out.expanduser()
    if not adapter_dir.is_dir():
        raise ExportError(f"The adapter folder {adapter_dir} does not exist.")
    config = read_json(adapter_dir / "adapter_config.json", "peft adapter folder")
    alpha, _, rslora = _check_config(config, adapter_dir)
    base = Base(base_gguf.expanduser())
    if out.resolve() == base.path.resolve():
        raise ExportError(f"{out} is the base model file; write the adapter elsewhere.")
    base.check_folder(adapter_dir, "the adapter folder")
    named = config.get("base_model_name_or_path")
    if isinstance(named, str) and named and Path(named).expanduser().is_dir():
        base.check_folder(Path(named).expanduser(), named)
    arch = base.arch
    planned: list[Planned] = []
    for module, pair in sorted(_pairs(index_weights(adapter_dir, "adapter_model"), adapter_dir).items()):
        weight = module + ".weight"
        name = arch.gguf_name(weight)
        if name is None or name not in base.tensors:
            raise ExportError(f"The adapter changes {module}, which {base.path.name} ({base.arch_name}, "
                              f"{arch.sizes.n_layers} layers) does not have.")
        a, b = pair["A"], pair["B"]
        base_shape, rank = base.tensors[name][0], (*a.shape, 0)[0]
        n_in, n_out = (*base_shape, 0, 0)[:2]
        if len(a.shape) != 2 or len(b.shape) != 2 or b.shape[1] != rank or rank <= 0:
            raise ExportError(f"The adapter's {module} has a lora_A of shape {list(a.shape)} and a lora_B of "
                              f"shape {list(b.shape)}, which do not multiply: the adapter is damaged.")
        if len(base_shape) != 2 or (a.shape[1], b.shape[0]) != (n_in, n_out):
            raise ExportError(f"The adapter's {module} is {b.shape[0]}x{a.shape[1]} but {name} in "
                              f"{base.path.name} is {n_out}x{n_in}: it was trained on another model.")
        module_alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, alpha))
        # peft adds (module_alpha / rank, or / sqrt(rank) with rsLoRA) * BA; llama.cpp alpha / rank * BA.
        factor = module_alpha / (math.sqrt(rank) if rslora else rank) * rank / alpha
        planned.append(Planned(name + ".lora_a", a.shape, tensor_type(name + ".lora_a", a.shape, qtype, False),
                               loader(a)))
        planned.append(Planned(name + ".lora_b", b.shape, tensor_type(name + ".lora_b", b.shape, qtype, False),
                               _scaled_b(loader(b), arch.row_order(weight), factor)))

    def metadata(w: gguf.GGUFWriter) -> None:
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        w.add_name(adapter_dir.resolve().name)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if completion_scale is not None:
            w.add_float32(COMPLETION_SCALE_KEY, float(completion_scale))

    log.info("Writing the adapter %s for %s (%d tensors)", out, base.path.name, len(planned))
    return write_gguf(out, base.arch_name, metadata, planned)
