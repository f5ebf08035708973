"""Our own forward pass for Llama-architecture models (SmolLM2, Llama 2/3, TinyLlama, ...).

Why not transformers' modules: a 135M model decoding one token on 2 CPU cores is bound by
memory bandwidth (~13 GB/s with the best weight layout, ~6.5 GB/s with ``F.linear``'s) plus
a fixed cost per tensor op. transformers' LlamaForCausalLM spends ~80 ops and a DynamicCache
update per layer; this file does the same arithmetic with fused q/k/v and gate/up weights,
a preallocated KV cache, the faster weight layout and a plain attention for single-token
steps, and loads straight from ``config.json`` + safetensors without importing transformers
(which is most of a worker's start-up time). Measurements: docs/performance.md.

In fp32/bf16 it computes what ``LlamaForCausalLM`` computes (greedy output is identical,
see tests/model/test_llama.py). ``quantize="int4"`` stores the layers' weights in 4-bit
groups and the output layer in 8-bit groups (exactly the weights of a Q4_1 GGUF file such
as the default model's) and reads ~1/5 of the bytes per token; with the native kernels
(``model/runtime/native.py``) activations stay fp32, so answers differ from fp32 only where the
order of additions tips a near-tie.

Batched decoding (``decode_batch``) runs the matmuls of several requests as one batch and
the attention of each request against its own cache, so requests of any length share a
step without padding or cache copies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

SUPPORTED_TYPES = ("llama",)
QUANTIZE_MODES = ("none", "int4")
# Above this many bytes of weights the second (faster single-row) weight layout is not kept:
# doubling a 1B+ model's memory costs more than the decode speed it buys.
BOTH_LAYOUTS_MAX_BYTES = 2 * 1024**3


def supports(config: dict) -> bool:
    """True when ``config`` (a parsed config.json) describes a model this file can run."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return (
        config.get("model_type") in SUPPORTED_TYPES
        and config.get("hidden_act", "silu") == "silu"
        and not config.get("attention_bias", False)
        and not config.get("mlp_bias", False)
        and rope.get("rope_type", rope.get("type", "default")) == "default"
    )


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    eps: float
    rope_theta: float
    context_window: int

    @classmethod
    def from_config(cls, config: dict) -> Shape:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        rope = config.get("rope_parameters") or {}
        return cls(
            layers=int(config["num_hidden_layers"]),
            hidden=hidden,
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            vocab=int(config["vocab_size"]),
            eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            context_window=int(config.get("max_position_embeddings") or 2048),
        )


class KVCache:
    """Keys and values of one request: ``[layers, kv_heads, capacity, head_dim]`` each.

    ``length`` tokens are valid; the capacity grows by doubling. ``crop`` follows
    transformers' convention (a negative count drops that many tokens from the end), so the
    prefix store treats this cache and a DynamicCache alike.
    """

    def __init__(self, shape: Shape, dtype: torch.dtype, device: str | torch.device, capacity: int = 64):
        self.shape = shape
        size = (shape.layers, shape.kv_heads, max(1, capacity), shape.head_dim)
        self.keys = torch.empty(size, dtype=dtype, device=device)
        self.values = torch.empty(size, dtype=dtype, device=device)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    @property
    def nbytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()

    def reserve(self, tokens: int) -> None:
        """Make room for ``tokens`` more tokens."""
        need = self.length + tokens
        if need <= self.capacity:
            return
        self._resize(max(need, 2 * self.capacity))

    def _resize(self, capacity: int) -> None:
        keys = self.keys.new_empty((*self.keys.shape[:2], capacity, self.keys.shape[3]))
        values = torch.empty_like(keys)
        keys[:, :, : self.length] = self.keys[:, :, : self.length]
        values[:, :, : self.length] = self.values[:, :, : self.length]
        self.keys, self.values = keys, values

    def crop(self, max_length: int) -> None:
        self.length = max(0, self.length + max_length if max_length < 0 else min(self.length, max_length))

    def get_seq_length(self) -> int:
        return self.length

    def compact(self) -> None:
        """Drop unused capacity (before the prefix store keeps this cache)."""
        if self.capacity > self.length:
            self._resize(max(1, self.length))

    def __deepcopy__(self, memo: dict) -> KVCache:
        copy = KVCache.__new__(KVCache)
        copy.shape = self.shape
        copy.length = self.length
        room = self.length + 64  # the copy is about to grow by a prompt's tail
        copy.keys = self.keys.new_empty((*self.keys.shape[:2], room, self.keys.shape[3]))
        copy.values = torch.empty_like(copy.keys)
        copy.keys[:, :, : self.length] = self.keys[:, :, : self.length]
        copy.values[:, :, : self.length] = self.values[:, :, : self.length]
        return copy


class Linear:
    """``y = x @ W.T`` with W in the model dtype, in 4-bit groups or in 8-bit groups.

    - ``none``: on the CPU (models up to ``BOTH_LAYOUTS_MAX_BYTES`` of weights) the weight is
      kept in both layouts: MKL reads a ``[in, out]`` copy ~2x faster for one row (a single
      request's decode step), and ``W @ x.T`` with the ``[out, in]`` layout is ~2x faster
      than ``F.linear`` for 2-16 rows (a batched step). That costs a second copy of the
      weights (measured in benchmarks/bench_model.py).
    - ``int4``: groups of 32 input weights share a scale and a minimum (the layout of GGUF's
      Q4_1, so weights that came from a Q4_1 file are reproduced exactly). Decode steps run
      the AVX2 kernels of ``model/runtime/native.py`` (fp32 activations, ~2x PyTorch's int4 kernel);
      without them PyTorch's int4 kernel runs with bf16 activations. A prefill of more than
      ``PREFILL_ROWS`` tokens decodes the groups back to the exact fp32 weights for one
      matrix product.
    - ``int8``: symmetric 8-bit groups of 32 (GGUF's Q8_0), for the output layer under int4;
      native kernels only. (fbgemm's dynamic int8 with per-step activation quantization was
      tried and dropped: it changed the default model's first answer token.)
    """

    GROUP = 32
    PREFILL_ROWS = 128  # measured crossover: the int4 kernel costs ~0.075 ms per row, decoding ~6 ms
    NATIVE_ROWS = 16  # up to this many rows (decode steps) the native kernels are used

    def __init__(self, weight: torch.Tensor, quantize: str = "none", both_layouts: bool = False):
        self.out_features, self.in_features = weight.shape
        self.weight = self.weight_t = None
        self.native: Any = None
        if quantize == "int4":
            q, self.scale, self.low = quantize_groups(weight.float(), self.GROUP)
            self.packed, self.scales_zeros = _pack_int4(q, self.scale, self.low)
            groups = q.view(self.out_features, -1, self.GROUP)  # byte c: q[c] | q[c + 16] << 4
            self.codes = (groups[..., :16] | (groups[..., 16:] << 4)).to(torch.uint8).reshape(self.out_features, -1)
            self.native = _native()
        elif quantize == "int8":
            self.codes, self.scale = quantize_groups8(weight.float(), self.GROUP)
            self.native = _native()
            if self.native is None:
                raise ValueError("int8 groups need the native kernels (model/runtime/native.py).")
        else:
            self.weight = weight.contiguous()
            if both_layouts and weight.dtype == torch.float32:  # MKL's bf16 kernels want [out, in]
                self.weight_t = weight.t().contiguous()
        self.kind = quantize

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        if self.weight is None:
            if self.native is not None and rows <= self.NATIVE_ROWS:
                return self._native(x)
            if self.kind == "int8" or rows > self.PREFILL_ROWS:
                return F.linear(x.float(), self.dequantized())
            # int4 through PyTorch's kernel: answers in bf16; residual adds promote to fp32
            if x.dtype != torch.bfloat16:
                x = x.to(torch.bfloat16)
            return torch.ops.aten._weight_int4pack_mm_for_cpu(x.contiguous(), self.packed, self.GROUP,
                                                              self.scales_zeros)
        if rows == 1 and self.weight_t is not None:
            return torch.mm(x, self.weight_t)
        if rows <= 16 and self.weight_t is not None:
            return torch.mm(self.weight, x.t()).t()
        return F.linear(x, self.weight)

    def _native(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous() if x.dtype == torch.float32 else x.float().contiguous()
        y = x.new_empty((x.shape[0], self.out_features))
        if self.kind == "int4":
            self.native.q4_matmul(x.data_ptr(), x.shape[0], self.in_features, self.codes.data_ptr(),
                                  self.scale.data_ptr(), self.low.data_ptr(), self.out_features, y.data_ptr())
        else:
            self.native.q8_matmul(x.data_ptr(), x.shape[0], self.in_features, self.codes.data_ptr(),
                                  self.scale.data_ptr(), self.out_features, y.data_ptr())
        return y

    def dequantized(self) -> torch.Tensor:
        """A quantized weight as fp32 ``[out, in]`` (q * scale + low, or q * scale, per group)."""
        if self.kind == "int8":
            q = self.codes.view(self.out_features, -1, self.GROUP).float()
            return (q * self.scale[..., None]).view(self.out_features, self.in_features)
        codes = self.codes.view(self.out_features, -1, self.GROUP // 2)
        q = torch.cat((codes & 15, codes >> 4), dim=-1)
        return (q.float() * self.scale[..., None] + self.low[..., None]).view(self.out_features, self.in_features)


def _native() -> Any:
    """The ctypes library of model/runtime/native.py, or None (then PyTorch's kernels are used)."""
    from . import native

    return native.kernels()


def quantize_groups8(w: torch.Tensor, group: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit codes per group: w ~= q * scale, q in [-127, 127] (GGUF's Q8_0)."""
    out, inp = w.shape
    if inp % group:
        raise ValueError(f"int8 groups need input sizes divisible by {group}; this model has {inp}.")
    g = w.view(out, inp // group, group)
    scale = (g.abs().amax(-1) / 127).clamp(min=1e-12)
    q = (g / scale[..., None]).round().clamp(-127, 127).to(torch.int8).view(out, inp)
    return q.contiguous(), scale.contiguous()


def quantize_groups(w: torch.Tensor, group: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """4-bit codes per group of ``group`` inputs: w ~= q * scale + low, q in [0, 15] (GGUF's Q4_1)."""
    out, inp = w.shape
    if inp % group:
        raise ValueError(f"int4 needs input sizes divisible by {group}; this model has {inp}.")
    g = w.view(out, inp // group, group)
    low, high = g.amin(-1), g.amax(-1)
    scale = ((high - low) / 15).clamp(min=1e-12)
    q = ((g - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32).view(out, inp)
    return q, scale, low


def _pack_int4(q: torch.Tensor, scale: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's int4 CPU layout, whose groups decode as (q - 8) * scale + zero."""
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    scales_zeros = torch.stack([scale, low + 8 * scale], dim=-1).transpose(0, 1).contiguous()
    return packed, scales_zeros.to(torch.bfloat16)


@dataclass
class Layer:
    attn_norm: torch.Tensor
    qkv: Linear
    out: Linear
    mlp_norm: torch.Tensor
    gate_up: Linear
    down: Linear


class LlamaModel:
    """Weights plus ``prefill`` / ``decode_batch``; stateless apart from the caches it is given."""

    def __init__(self, config: dict, weights: dict[str, torch.Tensor], *, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, quantize: str = "none", both_layouts: bool | None = None):
        if quantize not in QUANTIZE_MODES:
            raise ValueError(f"Unknown quantize mode {quantize!r}: use {' or '.join(QUANTIZE_MODES)}.")
        on_cpu = str(device).startswith("cpu")
        if quantize != "none" and not on_cpu:
            raise ValueError(f"{quantize} weights run on the CPU only; use quantize 'none' on a GPU.")
        if both_layouts is None:
            size = sum(t.numel() for t in weights.values()) * torch.tensor([], dtype=dtype).element_size()
            both_layouts = on_cpu and size <= BOTH_LAYOUTS_MAX_BYTES
        self.config = config
        self.shape = s = Shape.from_config(config)
        self.device = device
        self.dtype = dtype
        self.quantize = quantize

        def w(name: str) -> torch.Tensor:
            if name not in weights:
                raise ValueError(f"The checkpoint lacks the tensor {name}; it is not a Llama model.")
            return weights[name].to(device=device, dtype=dtype)

        self.layers = []
        for i in range(s.layers):
            p = f"model.layers.{i}."
            qkv = torch.cat([w(p + "self_attn.q_proj.weight"), w(p + "self_attn.k_proj.weight"),
                             w(p + "self_attn.v_proj.weight")])
            gate_up = torch.cat([w(p + "mlp.gate_proj.weight"), w(p + "mlp.up_proj.weight")])
            self.layers.append(Layer(
                attn_norm=w(p + "input_layernorm.weight"),
                qkv=Linear(qkv, quantize, both_layouts),
                out=Linear(w(p + "self_attn.o_proj.weight"), quantize, both_layouts),
                mlp_norm=w(p + "post_attention_layernorm.weight"),
                gate_up=Linear(gate_up, quantize, both_layouts),
                down=Linear(w(p + "mlp.down_proj.weight"), quantize, both_layouts),
            ))
        self.embed = w("model.embed_tokens.weight")
        self.norm = w("model.norm.weight")
        head = self.embed if "lm_head.weight" not in weights or config.get("tie_word_embeddings") else w("lm_head.weight")
        # Under int4 the output layer is kept in 8-bit groups (GGUF's Q8_0, the default model's
        # form) when the native kernels run, else in the model dtype.
        head_kind = "int8" if quantize == "int4" and _native() is not None else "none"
        self.head = Linear(head, head_kind, both_layouts)
        self.eos_ids: set[int] = set()  # from generation_config.json, set by the loader
        inv_freq = 1.0 / (s.rope_theta ** (torch.arange(0, s.head_dim, 2, dtype=torch.int64).float() / s.head_dim))
        self._inv_freq = inv_freq.to(device)
        self._rope_len = 0
        self._grow_rope(min(s.context_window, 4096))
        self.scale = 1.0 / math.sqrt(s.head_dim)

    # -- helpers ---------------------------------------------------------------------------

    def _grow_rope(self, length: int) -> None:
        """cos/sin tables for positions [0, length), computed as transformers does (fp32)."""
        positions = torch.arange(length, device=self.device).float()
        freqs = torch.outer(positions, self._inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = emb.cos().to(self.dtype)
        self.sin = emb.sin().to(self.dtype)
        self._rope_len = length

    def _rope(self, positions: torch.Tensor, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        if end > self._rope_len:
            self._grow_rope(max(end, 2 * self._rope_len))
        return self.cos[positions], self.sin[positions]

    # A decode step is ~50 small ops per layer, so each op and each no-op ``.to()`` that is
    # not dispatched shows in tokens per second: dtypes are checked in Python first.

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        h = x if x.dtype == torch.float32 else x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.shape.eps)
        return weight * (h if h.dtype == x.dtype else h.to(x.dtype))

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = self.shape.head_dim // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def _qkv(self, x: torch.Tensor, layer: Layer, rows: int) -> torch.Tensor:
        qkv = layer.qkv(self._norm(x, layer.attn_norm))
        if qkv.dtype != self.dtype:  # int4 layers answer in bf16
            qkv = qkv.to(self.dtype)
        return qkv.reshape(rows, self.shape.heads + 2 * self.shape.kv_heads, self.shape.head_dim)

    def new_cache(self, capacity: int = 64) -> KVCache:
        return KVCache(self.shape, self.dtype, self.device, capacity)

    def _attend_one(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """One query token against a request's cache: q [heads, d], keys/values [kv, T, d]."""
        s = self.shape
        group = s.heads // s.kv_heads
        q = q.view(s.kv_heads, group, s.head_dim)
        scores = torch.bmm(q, keys.transpose(1, 2)).mul_(self.scale)  # [kv, group, T]
        if scores.dtype == torch.float32:
            probs = torch.softmax(scores, dim=-1)
        else:
            probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        return torch.bmm(probs, values).view(1, s.heads * s.head_dim)

    # -- forward ---------------------------------------------------------------------------

    def prefill(self, ids: Sequence[int], cache: KVCache) -> torch.Tensor:
        """Feed ``ids`` after what ``cache`` holds; return the last position's logits [vocab]."""
        s = self.shape
        n = len(ids)
        start = cache.length
        cache.reserve(n)
        positions = torch.arange(start, start + n, device=self.device)
        cos, sin = self._rope(positions, start + n)
        cos, sin = cos[:, None, :], sin[:, None, :]
        x = self.embed[torch.tensor(list(ids), device=self.device)]
        mask = None
        if start and n > 1:  # new tokens see all cached ones and the new ones before them
            mask = torch.ones(n, start + n, dtype=torch.bool, device=self.device).tril(start)
        for i, layer in enumerate(self.layers):
            qkv = self._qkv(x, layer, n)
            qk = qkv[:, : s.heads + s.kv_heads]
            qk = self._rotate(qk, cos, sin)
            cache.keys[i, :, start : start + n] = qk[:, s.heads :].transpose(0, 1)
            cache.values[i, :, start : start + n] = qkv[:, s.heads + s.kv_heads :].transpose(0, 1)
            keys = cache.keys[i, :, : start + n].unsqueeze(0)
            values = cache.values[i, :, : start + n].unsqueeze(0)
            q = qk[:, : s.heads].transpose(0, 1).unsqueeze(0)
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=mask is None and n > 1,
                                                  scale=self.scale, enable_gqa=True)
            x = x + layer.out(attn[0].transpose(0, 1).reshape(n, s.heads * s.head_dim))
            x = self._mlp(x, layer)
        cache.length = start + n
        return self._logits(x[-1:])[0]

    def _mlp(self, x: torch.Tensor, layer: Layer) -> torch.Tensor:
        gate, up = layer.gate_up(self._norm(x, layer.mlp_norm)).chunk(2, dim=-1)
        return x + layer.down(F.silu(gate) * up)

    def decode_batch(self, tokens: Sequence[int], caches: Sequence[KVCache]) -> torch.Tensor:
        """One new token for each request (token i after cache i); logits [batch, vocab]."""
        s = self.shape
        b = len(tokens)
        starts = [c.length for c in caches]
        for c in caches:
            c.reserve(1)
        positions = torch.tensor(starts, device=self.device)
        cos, sin = self._rope(positions, max(starts) + 1)
        cos, sin = cos[:, None, :], sin[:, None, :]
        x = self.embed[torch.tensor(list(tokens), device=self.device)]
        for i, layer in enumerate(self.layers):
            qkv = self._qkv(x, layer, b)
            qk = qkv[:, : s.heads + s.kv_heads]
            qk = self._rotate(qk, cos, sin)
            outs = []
            for r, (cache, start) in enumerate(zip(caches, starts, strict=True)):
                cache.keys[i, :, start] = qk[r, s.heads :]
                cache.values[i, :, start] = qkv[r, s.heads + s.kv_heads :]
                outs.append(self._attend_one(qk[r, : s.heads], cache.keys[i, :, : start + 1],
                                             cache.values[i, :, : start + 1]))
            attn = outs[0] if b == 1 else torch.cat(outs)
            x = x + layer.out(attn)
            x = self._mlp(x, layer)
        for c in caches:
            c.length += 1
        return self._logits(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._norm(x, self.norm))


def load_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors checkpoint (one file or an index of shards)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ValueError(f"{folder} holds no model.safetensors; the lean runner needs safetensors weights.")
    weights: dict[str, torch.Tensor] = {}
    for name in files:
        weights.update(load_file(str(folder / name)))
    return weights


def read_config(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "config.json").read_text())


def load(folder: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
         quantize: str = "none") -> LlamaModel:
    """Load a Llama checkpoint folder (config.json + safetensors) without transformers."""
    config = read_config(folder)
    if not supports(config):
        raise ValueError(f"{folder} is not a plain Llama model (model_type {config.get('model_type')!r}).")
    return LlamaModel(config, load_weights(folder), device=device, dtype=dtype, quantize=quantize)
