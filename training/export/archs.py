"""One small class per architecture we train: its llama.cpp name, metadata and tensor rules.

Tensor names come from ``gguf``'s own map (``gguf.get_tensor_name_map``), never written out
here. What differs between families is which config keys hold the sizes, which norm and
activation they use, and Llama's q/k row order: transformers' rope rotates the two halves of
each head, llama.cpp's Llama rotates neighbouring pairs, so the rows of q and k (weights and
biases, and a LoRA's B) are put in llama.cpp's order (``row_order``), as its converter does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import gguf
import numpy as np

from .common import ExportError
from .source import config_get

_BUFFERS = (".rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias")


@dataclass(frozen=True)
class Sizes:
    """The sizes llama.cpp needs, whatever the family calls them."""

    n_layers: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx: int
    vocab_size: int
    head_dim: int


def _positive(config: dict[str, Any], keys: tuple[str, ...], what: str, default: Any = None) -> int:
    value = config_get(config, *keys, default=default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ExportError(f"config.json has no valid {what} ({' or '.join(keys)}).")
    return value


class Arch:
    """Shared rules; subclasses name the family and override what differs."""

    model_types: ClassVar[tuple[str, ...]] = ()
    gguf_arch: ClassVar[gguf.MODEL_ARCH]
    activations: ClassVar[tuple[str, ...]] = ("silu",)
    tied_default: ClassVar[bool] = False

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.sizes = self.read_sizes(config)
        act = config_get(config, "hidden_act", "activation_function", default=self.activations[0])
        if act not in self.activations:
            raise ExportError(f"{self.name} models with the activation {act!r} are not supported "
                              f"(llama.cpp's {self.name} uses {self.activations[0]}).")
        self.tied = bool(config.get("tie_word_embeddings", self.tied_default))
        self.name_map = gguf.get_tensor_name_map(self.gguf_arch, self.sizes.n_layers)

    @classmethod
    def from_sizes(cls, sizes: Sizes) -> Arch:
        """The rules for a model known by its sizes only (a base GGUF file's metadata)."""
        arch = cls.__new__(cls)
        arch.config, arch.sizes, arch.tied = {}, sizes, False
        arch.name_map = gguf.get_tensor_name_map(cls.gguf_arch, sizes.n_layers)
        return arch

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    def read_sizes(self, config: dict[str, Any]) -> Sizes:
        n_embd = _positive(config, ("hidden_size",), "hidden size")
        n_head = _positive(config, ("num_attention_heads",), "head count")
        n_head_kv = _positive(config, ("num_key_value_heads",), "key/value head count", default=n_head)
        head_dim = _positive(config, ("head_dim",), "head size", default=n_embd // n_head)
        if n_head % n_head_kv:
            raise ExportError(f"config.json has {n_head} heads, not a multiple of {n_head_kv} key/value heads.")
        return Sizes(
            n_layers=_positive(config, ("num_hidden_layers",), "layer count"), n_embd=n_embd,
            n_head=n_head, n_head_kv=n_head_kv,
            n_ff=_positive(config, ("intermediate_size",), "feed-forward size"),
            n_ctx=_positive(config, ("max_position_embeddings",), "context length"),
            vocab_size=_positive(config, ("vocab_size",), "vocabulary size"), head_dim=head_dim)

    # --- tensors ---------------------------------------------------------------------------

    def skip(self, hf_name: str) -> bool:
        """Buffers that are not weights, and an output layer llama.cpp takes from the embedding."""
        return hf_name.endswith(_BUFFERS) or (self.tied and hf_name == "lm_head.weight")

    def gguf_name(self, hf_name: str) -> str | None:
        return self.name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))

    def row_order(self, hf_name: str) -> np.ndarray | None:
        """The row permutation llama.cpp's layout needs for this tensor, or None."""
        return None

    def extra_tensors(self) -> list[tuple[str, np.ndarray]]:
        return []

    # --- metadata --------------------------------------------------------------------------

    def rope(self) -> tuple[float | None, dict[str, Any]]:
        params = self.config.get("rope_parameters") or self.config.get("rope_scaling") or {}
        theta = params.get("rope_theta", self.config.get("rope_theta"))
        return (float(theta) if theta is not None else None), params

    def write_metadata(self, w: gguf.GGUFWriter) -> None:
        s = self.sizes
        w.add_context_length(s.n_ctx)
        w.add_embedding_length(s.n_embd)
        w.add_feed_forward_length(s.n_ff)
        w.add_block_count(s.n_layers)
        w.add_head_count(s.n_head)
        w.add_head_count_kv(s.n_head_kv)
        if s.head_dim != s.n_embd // s.n_head:
            w.add_key_length(s.head_dim)
            w.add_value_length(s.head_dim)
        theta, params = self.rope()
        if theta is not None:
            w.add_rope_freq_base(theta)
        self.write_rope_scaling(w, params)
        self.write_norm_eps(w)

    def write_norm_eps(self, w: gguf.GGUFWriter) -> None:
        w.add_layer_norm_rms_eps(float(config_get(self.config, "rms_norm_eps", default=1e-6)))

    def write_rope_scaling(self, w: gguf.GGUFWriter, params: dict[str, Any]) -> None:
        kind = params.get("rope_type", params.get("type"))
        factor = params.get("factor")
        if kind in (None, "default"):
            return
        if kind == "linear" and factor:
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(factor))
        elif kind == "yarn" and factor and params.get("original_max_position_embeddings"):
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(float(factor))
            w.add_rope_scaling_orig_ctx_len(int(params["original_max_position_embeddings"]))
        else:
            raise ExportError(f"The rope scaling {kind!r} of this {self.name} model is not supported.")


def _rope_rows(rows: int, n_head: int) -> np.ndarray:
    """Row indices taking transformers' half-split head layout to llama.cpp's pairs."""
    return np.arange(rows).reshape(n_head, 2, rows // n_head // 2).swapaxes(1, 2).reshape(rows)


class Llama(Arch):
    model_types = ("llama",)
    gguf_arch = gguf.MODEL_ARCH.LLAMA

    def row_order(self, hf_name: str) -> np.ndarray | None:
        s = self.sizes
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return _rope_rows(s.n_head * s.head_dim, s.n_head)
        if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return _rope_rows(s.n_head_kv * s.head_dim, s.n_head_kv)
        return None

    def write_metadata(self, w: gguf.GGUFWriter) -> None:
        super().write_metadata(w)
        w.add_vocab_size(self.sizes.vocab_size)
        w.add_rope_dimension_count(self.sizes.head_dim)

    def write_rope_scaling(self, w: gguf.GGUFWriter, params: dict[str, Any]) -> None:
        if params.get("rope_type", params.get("type")) != "llama3":
            super().write_rope_scaling(w, params)  # llama3 is a tensor, see extra_tensors

    def extra_tensors(self) -> list[tuple[str, np.ndarray]]:
        """Llama 3's frequency factors (``rope_freqs``), computed as transformers does."""
        theta, p = self.rope()
        if p.get("rope_type", p.get("type")) != "llama3":
            return []
        dim = self.sizes.head_dim
        freqs = 1.0 / ((theta or 10000.0) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
        factor, low, high = float(p.get("factor", 8.0)), float(p.get("low_freq_factor", 1.0)), \
            float(p.get("high_freq_factor", 4.0))
        old = float(p.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / freqs
        smooth = (old / wavelen - low) / (high - low)
        rope = np.where(wavelen < old / high, 1.0,
                        np.where(wavelen > old / low, factor, 1 / ((1 - smooth) / factor + smooth)))
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        return [(name, rope.astype(np.float32))]


class Qwen2(Arch):
    model_types = ("qwen2",)
    gguf_arch = gguf.MODEL_ARCH.QWEN2

    def __init__(self, config: dict[str, Any]):
        if config.get("use_sliding_window"):
            raise ExportError("Qwen2 models with sliding-window attention are not supported by llama.cpp's qwen2.")
        super().__init__(config)


class StarCoder2(Arch):
    model_types = ("starcoder2",)
    gguf_arch = gguf.MODEL_ARCH.STARCODER2
    activations = ("gelu_pytorch_tanh", "gelu", "gelu_new")
    tied_default = True

    def write_norm_eps(self, w: gguf.GGUFWriter) -> None:
        w.add_layer_norm_eps(float(config_get(self.config, "norm_epsilon", "layer_norm_epsilon", default=1e-5)))


class StarCoder(Arch):
    """GPTBigCode (StarCoder, SantaCoder): learned positions, LayerNorm, fused qkv."""

    model_types = ("gpt_bigcode",)
    gguf_arch = gguf.MODEL_ARCH.STARCODER
    activations = ("gelu_pytorch_tanh", "gelu", "gelu_new")
    tied_default = True

    def read_sizes(self, config: dict[str, Any]) -> Sizes:
        n_embd = _positive(config, ("n_embd",), "hidden size")
        n_head = _positive(config, ("n_head",), "head count")
        return Sizes(
            n_layers=_positive(config, ("n_layer",), "layer count"), n_embd=n_embd, n_head=n_head,
            n_head_kv=1 if config.get("multi_query", True) else n_head,
            n_ff=_positive(config, ("n_inner",), "feed-forward size", default=4 * n_embd),
            n_ctx=_positive(config, ("n_positions",), "context length"),
            vocab_size=_positive(config, ("vocab_size",), "vocabulary size"), head_dim=n_embd // n_head)

    def rope(self) -> tuple[float | None, dict[str, Any]]:
        return None, {}

    def write_norm_eps(self, w: gguf.GGUFWriter) -> None:
        w.add_layer_norm_eps(float(config_get(self.config, "layer_norm_epsilon", default=1e-5)))


ARCHS: tuple[type[Arch], ...] = (Llama, Qwen2, StarCoder2, StarCoder)


def arch_for(config: dict[str, Any]) -> Arch:
    """The class for a folder's ``config.json``; ExportError for any other family."""
    model_type = config.get("model_type")
    for cls in ARCHS:
        if model_type in cls.model_types:
            return cls(config)
    known = ", ".join(t for cls in ARCHS for t in cls.model_types)
    raise ExportError(f"The architecture {model_type!r} is not supported by export-gguf (use one of {known}).")


def arch_class(gguf_name: str) -> type[Arch] | None:
    """The class whose llama.cpp architecture is ``gguf_name`` (a base GGUF's), or None."""
    return next((cls for cls in ARCHS if gguf.MODEL_ARCH_NAMES[cls.gguf_arch] == gguf_name), None)
