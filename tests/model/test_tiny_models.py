"""The tiny models of tests/tiny_models.py are what they claim to be.

The GGUF files (written by our converter, ``training.export``) hold the folder's weights
(read back through transformers, Q8_0 logits match the folder's), llama.cpp loads and runs
every one of them with the converted vocabulary tokenizing as the folder's does, and the synthetic builder writes the tensor sizes it
was asked for.
"""

from __future__ import annotations

import pytest

from tests.tiny_models import ARCHS, QTYPES, SHAPES, Shapes, synthetic_gguf

xllamacpp = pytest.importorskip("xllamacpp", reason="no llama.cpp wheel for this platform")

PROMPT = "<|im_start|>user\ndef add(a, b):\n    return a + b<|im_end|>\n"


def llama_cpp(path, n_ctx: int = 256):
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 2
    return xllamacpp.Server(params)


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_gguf_loads_and_generates_in_llama_cpp(arch, qtype, tiny_models, tokenizer):
    path = tiny_models.gguf(arch, qtype)
    server = llama_cpp(path)
    reply = server.handle_completions({"prompt": PROMPT, "max_tokens": 5, "temperature": 0.0,
                                       "ignore_eos": True})
    assert reply["usage"]["completion_tokens"] == 5, reply
    assert reply["choices"][0]["finish_reason"] == "length"
    # The converted vocabulary, merges and pre-tokenizer split text exactly as the folder's
    # tokenizer does (special-token strings in the prompt included). For `qwen2` that is not
    # the embedded tokenizer: transformers loads a `qwen2` folder's tokenizer as
    # Qwen2Tokenizer, whose own split rule replaces the one in tokenizer.json.
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(tiny_models.folder(arch))(PROMPT)["input_ids"]
    assert reply["usage"]["prompt_tokens"] == len(expected)
    assert len(expected) == (18 if arch == "qwen2" else 17) and len(tokenizer(PROMPT)["input_ids"]) == 17


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "gpt_bigcode"])
def test_q8_gguf_holds_the_folders_weights(arch, tiny_models):
    """Read back by transformers (which undoes llama.cpp's Llama q/k row order), the Q8_0
    file computes what the folder computes, up to quantization noise."""
    import torch
    from transformers import AutoModelForCausalLM

    path = tiny_models.gguf(arch, "Q8_0")
    folder = AutoModelForCausalLM.from_pretrained(tiny_models.folder(arch)).eval()
    gguf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    ids = torch.tensor([[1604, 33662, 3734, 216, 2, 100, 200, 300, 4000, 40000]])
    with torch.inference_mode():
        want, got = folder(ids).logits, gguf(ids).logits
    assert want.std() > 0.1  # random weights, yet not a flat distribution
    assert (want - got).abs().max() < 0.05
    assert gguf.config.tie_word_embeddings == folder.config.tie_word_embeddings


@pytest.mark.parametrize("template", ["chatml", "starchat"])
def test_folder_config_matches_its_tokenizer(template, tiny_models):
    import json

    from model.runtime.loading import load_tokenizer

    folder = tiny_models.folder("gpt_bigcode", template)
    tokenizer = load_tokenizer(str(folder))
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    assert config["vocab_size"] == len(tokenizer) == (49152 if template == "chatml" else 49156)
    assert (config["bos_token_id"], config["eos_token_id"]) == (tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert generation["eos_token_id"] == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert bool(tokenizer.chat_template) == (template == "chatml")


def test_synthetic_gguf_has_the_requested_shapes(tmp_path):
    import gguf

    shapes = Shapes("qwen2", layers=2, hidden=128, heads=4, kv_heads=2, ffn=256, context=1024,
                    rope_theta=1e6, rms_eps=1e-6, tied=True, qkv_bias=True)
    path = synthetic_gguf(tmp_path / "synthetic.gguf", shapes, "Q4_0")
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 1 + 2 * 12 + 1  # token table, 12 per layer, final norm (tied)
    assert tensors["blk.1.ffn_down.weight"].tensor_type.name == "Q4_0"
    assert list(tensors["blk.1.ffn_down.weight"].shape) == [256, 128]
    assert list(tensors["blk.0.attn_k.weight"].shape) == [128, 64]
    reply = llama_cpp(path).handle_completions({"prompt": "x = ", "max_tokens": 3, "ignore_eos": True})
    assert reply["usage"]["completion_tokens"] == 3
    assert SHAPES["qwen2.5-1.5b"].layers == 28 and SHAPES["qwen2.5-1.5b"].hidden == 1536
