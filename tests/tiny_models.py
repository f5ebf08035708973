"""Tiny random-weight models of the architectures users bring, built here with no hub.

- ``tiny_folder(arch, out_dir)``: a transformers model folder (safetensors) of ``llama``,
  ``gpt_bigcode`` (StarCoder), ``starcoder2`` or ``qwen2``: 2 layers, hidden 64, GQA (MQA
  for ``gpt_bigcode``), with the embedded SmolLM2 tokenizer (vocab 49152, ChatML) beside it.
- ``tiny_gguf(arch, out_path, qtype)``: the same model (same seed, same weights) converted
  to a GGUF file by our own converter (``training.export``, what ``starchat export-gguf``
  runs), as ``F32``, ``F16``, ``Q8_0`` or ``Q4_0``.
- ``synthetic_gguf(out_path, shapes)``: random quantized weights with a real model's shapes
  (Qwen2.5-1.5B's by default), streamed to disk, for the memory/speed benchmark.

Everything is seeded, so two builds of one (arch, variant) hold identical weights.
``template`` picks the tokenizer's chat format: ``chatml`` (the embedded template),
``none`` (no template and no StarChat tokens: dialogue prompting: a base model),
``starchat`` (the four StarChat tokens added, no template: the StarChat template is used),
or a model family of ``FAMILIES``: that family's real chat template
(``tests/data/templates``), with its control tokens, bos and eos added as special tokens
(the vocabulary grows by a few entries, in the folder and in the GGUF file alike).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ARCHS = ("llama", "gpt_bigcode", "starcoder2", "qwen2")
QTYPES = ("Q8_0", "Q4_0")  # the quantized types tests run everywhere
GGUF_TYPES = ("F32", "F16", *QTYPES, "Q4_1")  # Q4_1: the embedded model's kind
TEMPLATE_DIR = Path(__file__).parent / "data" / "templates"


@dataclass(frozen=True)
class Family:
    """A model family's chat template (a file in ``TEMPLATE_DIR``) and the tokens it uses."""

    template: str
    bos: str | None
    eos: str
    tokens: tuple[str, ...] = ()


FAMILIES = {
    "gemma-2": Family("gemma-2.jinja", "<bos>", "<eos>", ("<start_of_turn>", "<end_of_turn>")),
    "mistral": Family("mistral-instruct-v0.2.jinja", "<s>", "</s>"),  # also Mixtral-8x7B
    "mistral-nemo": Family("mistral-nemo-instruct-2407.jinja", "<s>", "</s>", ("[INST]", "[/INST]")),
    "llama-3": Family("llama-3.2-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>",
                      ("<|start_header_id|>", "<|end_header_id|>")),
    "qwen2.5": Family("qwen2.5-instruct.jinja", None, "<|im_end|>", ("<|im_start|>",)),
    "phi-3": Family("phi-3-mini.jinja", "<s>", "<|endoftext|>",
                    ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")),
    "deepseek-coder": Family("deepseek-coder-instruct.jinja", "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
                             "<|EOT|>"),
    "starcoder2-instruct": Family("starcoder2-instruct.jinja", "<|endoftext|>", "<|endoftext|>"),
}
TEMPLATES = ("chatml", "none", "starchat", *FAMILIES)
SEED = 1234
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, CONTEXT = 64, 2, 4, 2, 128, 2048



@functools.cache
def _base_tokenizer() -> Any:
    """The embedded model's tokenizer, read from its GGUF file.

    What ``model.runtime.loading.load_tokenizer("default")`` returns, without going through the
    model cache: tests may point ``STARCHAT_CACHE_DIR`` at a temp dir, and the first use
    of an empty cache would de-quantize the whole embedded model (~15 s, ~1 GB).
    """
    from transformers import AutoTokenizer

    from model.runtime.spec import default_gguf_path

    path = default_gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def tokenizer_for(template: str = "chatml") -> Any:
    """A copy of the embedded tokenizer with the chat format ``template`` asks for."""
    import copy

    from model.prompt.chat_format import STARCHAT_TOKENS

    if template not in TEMPLATES:
        raise ValueError(f"Unknown template {template!r}: use {', '.join(TEMPLATES)}.")
    tokenizer = copy.deepcopy(_base_tokenizer())
    if template != "chatml":
        tokenizer.chat_template = None
    if template == "starchat":
        tokenizer.add_special_tokens({"additional_special_tokens": list(STARCHAT_TOKENS)})
    if template in FAMILIES:
        family = FAMILIES[template]
        tokenizer.add_special_tokens({"eos_token": family.eos, **({"bos_token": family.bos} if family.bos else {})})
        tokenizer.add_special_tokens({"additional_special_tokens": list(family.tokens)})
        tokenizer.chat_template = (TEMPLATE_DIR / family.template).read_text(encoding="utf-8")
    return tokenizer


def tiny_config(arch: str, vocab_size: int = 49152, bos: int = 1, eos: int = 2, pad: int = 2) -> Any:
    """A small config of ``arch`` with the embedded tokenizer's vocabulary and special ids."""
    from transformers import AutoConfig

    if arch not in ARCHS:
        raise ValueError(f"Unknown architecture {arch!r}: use {', '.join(ARCHS)}.")
    ids = dict(vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    if arch == "gpt_bigcode":  # StarCoder: learned positions, LayerNorm, GELU, multi-query
        return AutoConfig.for_model(arch, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=FFN,
                                    n_positions=CONTEXT, multi_query=True, **ids)
    common = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  num_key_value_heads=KV_HEADS, intermediate_size=FFN, max_position_embeddings=CONTEXT, **ids)
    if arch == "llama":  # CodeLlama-like: untied output layer
        return AutoConfig.for_model(arch, tie_word_embeddings=False, rope_theta=10000.0, **common)
    if arch == "starcoder2":
        return AutoConfig.for_model(arch, tie_word_embeddings=True, rope_theta=100000.0, use_bias=True, **common)
    return AutoConfig.for_model(arch, tie_word_embeddings=True, rope_theta=1000000.0, **common)


def tiny_model(arch: str, template: str = "chatml") -> tuple[Any, Any]:
    """(model, tokenizer): random weights from a fixed seed, in fp32 on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer_for(template)
    config = tiny_config(arch, vocab_size=len(tokenizer), bos=tokenizer.bos_token_id,
                         eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # norms start at 1 and biases at 0; make them random too, so a
        for param in model.parameters():  # converter that drops one is caught
            if param.dim() == 1:
                param.add_(torch.randn_like(param) * 0.02)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def tiny_folder(arch: str, out_dir: str | Path, template: str = "chatml") -> Path:
    """Write a tiny ``arch`` model folder (safetensors + tokenizer) to ``out_dir``; returns it."""
    out = Path(out_dir)
    model, tokenizer = tiny_model(arch, template)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


# --- GGUF ---------------------------------------------------------------------------------

@functools.cache
def _embedded_tokenizer_fields() -> tuple[tuple[str, Any, Any, Any], ...]:
    """(name, value, type, array item type) of the embedded file's ``tokenizer.*`` fields.

    Read once per process: parsing the 49,152-entry vocabulary takes ~10 s on a busy machine.
    """
    import gguf

    from model.runtime.spec import default_gguf_path

    fields = []
    for name, field in gguf.GGUFReader(str(default_gguf_path())).fields.items():
        if name.startswith("tokenizer."):
            is_array = field.types[0] == gguf.GGUFValueType.ARRAY
            fields.append((name, field.contents(), field.types[0], field.types[-1] if is_array else None))
    return tuple(fields)


def _copy_tokenizer_fields(writer: Any) -> None:
    """The embedded file's ``tokenizer.*`` fields: vocabulary, merges, ids, chat template."""
    for name, value, vtype, sub_type in _embedded_tokenizer_fields():
        writer.add_key_value(name, value, vtype, sub_type=sub_type)


def tiny_gguf(arch: str, out_path: str | Path, qtype: str = "Q8_0", template: str = "chatml",
              folder: str | Path | None = None, extra_tokens: int = 0) -> Path:
    """Write the tiny ``arch`` model as a ``qtype`` GGUF file at ``out_path``; returns it.

    Converted by the product's own converter (``training.export``) from the tiny folder of
    ``template`` (``folder`` when it is already built, else one made in a temp dir and
    removed), so the file holds the folder's weights and tokenizer: its chat template where it
    has one, a family's tokens and ids. ``extra_tokens`` then makes a file that lies: its
    vocabulary lists that many tokens more than its weights have rows.
    """
    import tempfile

    from training.export import export_folder

    if qtype not in GGUF_TYPES:
        raise ValueError(f"Unknown qtype {qtype!r}: use {', '.join(GGUF_TYPES)}.")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if folder is not None:
        export_folder(folder, out, qtype.lower())
    else:
        with tempfile.TemporaryDirectory(prefix=f"tiny-{arch}-") as tmp:
            export_folder(tiny_folder(arch, tmp, template), out, qtype.lower())
    if extra_tokens:
        _add_fake_tokens(out, extra_tokens)
    return out


def _add_fake_tokens(path: Path, count: int) -> None:
    """Rewrite the GGUF file at ``path`` with ``count`` control tokens appended to its
    vocabulary and nothing else changed (a fault no converter writes on purpose)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    tmp = path.with_name(path.name + ".lying")
    writer = gguf.GGUFWriter(str(tmp), str(reader.fields["general.architecture"].contents()))
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value, kind = field.contents(), field.types[0]
        if name == "tokenizer.ggml.tokens":
            value = [*value, *(f"<extra_{i}>" for i in range(count))]
        if name == "tokenizer.ggml.token_type":
            value = [*value, *[int(gguf.TokenType.CONTROL)] * count]
        writer.add_key_value(name, value, kind, sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.array(tensor.data), raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    del reader
    tmp.replace(path)


class TinyModels:
    """Builds each tiny folder/GGUF once and hands out the same path afterwards.

    ``tests/conftest.py`` makes one per pytest session (fixture ``tiny_models``); the files
    live under the session's temp dir and go with it.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._built: dict[tuple, Path] = {}

    def folder(self, arch: str, template: str = "chatml") -> Path:
        key = ("folder", arch, template)
        if key not in self._built:
            self._built[key] = tiny_folder(arch, self.root / f"{arch}-{template}", template)
        return self._built[key]

    def gguf(self, arch: str, qtype: str = "Q8_0", template: str = "chatml") -> Path:
        key = ("gguf", arch, qtype, template)
        if key not in self._built:
            self._built[key] = tiny_gguf(arch, self.root / f"{arch}-{template}-{qtype}.gguf", qtype, template,
                                         folder=self.folder(arch, template))
        return self._built[key]


# --- a real-sized model's shapes, for benchmarks ------------------------------------------

@dataclass(frozen=True)
class Shapes:
    arch: str  # llama.cpp architecture name
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    context: int
    rope_theta: float
    rms_eps: float
    tied: bool
    qkv_bias: bool


SHAPES = {
    "qwen2.5-1.5b": Shapes("qwen2", 28, 1536, 12, 2, 8960, 32768, 1000000.0, 1e-6, True, True),
    "qwen2.5-0.5b": Shapes("qwen2", 24, 896, 14, 2, 4864, 32768, 1000000.0, 1e-6, True, True),
}


def _random_blocks(rng: np.random.Generator, rows: int, cols: int, quant: Any) -> np.ndarray:
    """Random quantized rows built directly as blocks (fast: no fp32 matrix to quantize).

    Each block is an fp16 scale followed by random codes; the scale gives the values a
    standard deviation of about 0.02, like a freshly initialised layer.
    """
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[quant]
    n_blocks = rows * cols // block
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    # Q4_0 codes are 0..15 around 8 (std ~4.6 steps); Q8_0 codes are -128..127 (std ~74).
    step = 0.02 / (4.6 if quant == gguf.GGMLQuantizationType.Q4_0 else 74.0)
    raw[:, :2] = np.frombuffer(np.float16(step).tobytes(), dtype=np.uint8)
    return raw.reshape(rows, cols // block * size)


def synthetic_gguf(out_path: str | Path, shapes: str | Shapes = "qwen2.5-1.5b", qtype: str = "Q4_0",
                   seed: int = SEED) -> Path:
    """Write a GGUF with ``shapes``' layer sizes (a ``SHAPES`` key or a ``Shapes``) and random
    ``qtype`` weights; returns it.

    The vocabulary is the embedded tokenizer's (49,152 entries), so the file loads and
    chats anywhere the embedded model does; the token table is Q8_0, like llama.cpp's own
    Q4_0 files. Tensors are streamed, so memory stays at one tensor.
    """
    import gguf

    s = SHAPES[shapes] if isinstance(shapes, str) else shapes
    quant = gguf.GGMLQuantizationType[qtype]
    vocab = 49152
    head_dim = s.hidden // s.heads
    kv = s.kv_heads * head_dim
    tensors: list[tuple[str, tuple[int, int] | tuple[int], Any]] = [
        ("token_embd.weight", (vocab, s.hidden), gguf.GGMLQuantizationType.Q8_0)]
    for i in range(s.layers):
        p = f"blk.{i}."
        tensors += [
            (p + "attn_norm.weight", (s.hidden,), None),
            (p + "attn_q.weight", (s.hidden, s.hidden), quant),
            (p + "attn_k.weight", (kv, s.hidden), quant),
            (p + "attn_v.weight", (kv, s.hidden), quant),
            (p + "attn_output.weight", (s.hidden, s.hidden), quant),
            (p + "ffn_norm.weight", (s.hidden,), None),
            (p + "ffn_gate.weight", (s.ffn, s.hidden), quant),
            (p + "ffn_up.weight", (s.ffn, s.hidden), quant),
            (p + "ffn_down.weight", (s.hidden, s.ffn), quant),
        ]
        if s.qkv_bias:
            tensors += [(p + "attn_q.bias", (s.hidden,), None), (p + "attn_k.bias", (kv,), None),
                        (p + "attn_v.bias", (kv,), None)]
    tensors.append(("output_norm.weight", (s.hidden,), None))
    if not s.tied:
        tensors.append(("output.weight", (vocab, s.hidden), quant))

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), s.arch)
    writer.add_name(f"synthetic-{shapes if isinstance(shapes, str) else s.arch}")
    writer.add_context_length(s.context)
    writer.add_embedding_length(s.hidden)
    writer.add_feed_forward_length(s.ffn)
    writer.add_block_count(s.layers)
    writer.add_head_count(s.heads)
    writer.add_head_count_kv(s.kv_heads)
    writer.add_rope_freq_base(s.rope_theta)
    writer.add_layer_norm_rms_eps(s.rms_eps)
    writer.add_file_type(gguf.LlamaFileType[f"MOSTLY_{qtype}"])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _copy_tokenizer_fields(writer)
    for name, shape, q in tensors:
        if q is None:
            writer.add_tensor_info(name, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
        else:
            block, size = gguf.GGML_QUANT_SIZES[q]
            byte_shape = (shape[0], shape[1] // block * size)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=q)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, shape, q in tensors:
        if q is not None:
            data = _random_blocks(rng, shape[0], shape[1], q)
        elif name.endswith(".bias"):
            data = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        else:
            data = (1.0 + rng.standard_normal(shape) * 0.02).astype(np.float32)
        writer.write_tensor_data(data)
    writer.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """``python tests/tiny_models.py {folder,gguf,synthetic} OUT [...]``: build one model."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("folder", "gguf", "synthetic"))
    parser.add_argument("out")
    parser.add_argument("--arch", choices=ARCHS, default="qwen2")
    parser.add_argument("--qtype", default=None, help="F32, F16, Q8_0 or Q4_0 (gguf: Q8_0, synthetic: Q4_0)")
    parser.add_argument("--template", choices=TEMPLATES, default="chatml")
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="qwen2.5-1.5b")
    args = parser.parse_args(argv)
    if args.kind == "folder":
        path = tiny_folder(args.arch, args.out, args.template)
    elif args.kind == "gguf":
        path = tiny_gguf(args.arch, args.out, args.qtype or "Q8_0", args.template)
    else:
        path = synthetic_gguf(args.out, args.shapes, args.qtype or "Q4_0")
    print(path)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
