"""Our own Llama forward pass against transformers' LlamaForCausalLM.

A tiny random Llama (built here, GQA, untied head) checks the arithmetic of every path:
prefill, prefill after a cached prefix (the masked case), single and batched decode steps.
The real embedded model checks the int4 weights and the int4 answers.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from model.runtime import llama


@pytest.fixture(scope="module", params=[True, False], ids=["two-layouts", "one-layout"])
def tiny(request, tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False, rms_norm_eps=1e-5)
    ref = LlamaForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("tiny-llama")
    ref.save_pretrained(folder)
    own = llama.LlamaModel(llama.read_config(folder), llama.load_weights(folder), both_layouts=request.param)
    assert (own.head.weight_t is not None) == request.param
    return ref, own


def _ref_logits(ref, ids):
    with torch.inference_mode():
        return ref(torch.tensor([ids])).logits[0]


IDS = [5, 17, 3, 88, 42, 7, 7, 60, 11, 2, 31, 9]


def test_prefill_and_decode_equal_transformers(tiny):
    ref, own = tiny
    full = _ref_logits(ref, IDS)
    with torch.inference_mode():
        cache = own.new_cache(capacity=4)  # small: the cache must grow while feeding
        torch.testing.assert_close(own.prefill(IDS[:8], cache), full[7], rtol=1e-4, atol=1e-5)
        for pos in range(8, len(IDS)):
            logits = own.decode_batch([IDS[pos]], [cache])[0]
            torch.testing.assert_close(logits, full[pos], rtol=1e-4, atol=1e-5)
    assert cache.length == len(IDS) and cache.capacity >= len(IDS)


def test_prefill_after_a_cached_prefix_uses_the_causal_offset(tiny):
    ref, own = tiny
    full = _ref_logits(ref, IDS)
    with torch.inference_mode():
        cache = own.new_cache()
        own.prefill(IDS[:5], cache)
        torch.testing.assert_close(own.prefill(IDS[5:], cache), full[-1], rtol=1e-4, atol=1e-5)


def test_batched_decode_equals_each_request_alone(tiny):
    _, own = tiny
    prompts = [IDS[:3], IDS[:9], IDS[2:7]]
    with torch.inference_mode():
        solo = []
        for p in prompts:
            c = own.new_cache()
            own.prefill(p, c)
            solo.append(own.decode_batch([4], [c])[0])
        caches = [own.new_cache() for _ in prompts]
        for p, c in zip(prompts, caches, strict=True):
            own.prefill(p, c)
        batched = own.decode_batch([4, 4, 4], caches)
    for i in range(3):
        torch.testing.assert_close(batched[i], solo[i], rtol=1e-4, atol=1e-5)
    assert [c.length for c in caches] == [4, 10, 6]


def test_cache_crop_and_copy(tiny):
    _, own = tiny
    with torch.inference_mode():
        cache = own.new_cache()
        own.prefill(IDS, cache)
        twin = copy.deepcopy(cache)
        twin.crop(-4)  # transformers' convention: drop the last four
        assert twin.get_seq_length() == len(IDS) - 4 and cache.length == len(IDS)
        # The cropped copy continues exactly like a cache that never saw those four tokens.
        fresh = own.new_cache()
        own.prefill(IDS[:-4], fresh)
        torch.testing.assert_close(own.prefill(IDS[-4:], twin), own.prefill(IDS[-4:], fresh))
        cache.crop(3)
        assert cache.length == 3
        cache.compact()
        assert cache.capacity == 3 and cache.nbytes == 2 * (3 * 2 * 3 * 16) * 4  # k+v, layers x kv x tokens x dim, fp32
        torch.testing.assert_close(cache.keys, twin.keys[:, :, :3])
    assert twin.nbytes == 2 * twin.keys.numel() * 4


def test_unsupported_configs_are_left_to_transformers():
    base = {"model_type": "llama", "hidden_act": "silu"}
    assert llama.supports(base)
    assert not llama.supports({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    assert not llama.supports({**base, "attention_bias": True})
    assert not llama.supports({"model_type": "gpt_bigcode"})


def test_int4_holds_the_gguf_weights_exactly(loaded):
    """The default model's layers came from Q4_1 blocks of 32: 4-bit groups hold them exactly."""
    from model.runtime.loading import local_folder

    weights = llama.load_weights(local_folder("default"))
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.29.mlp.down_proj.weight"):
        w = weights[name]
        q, scale, low = llama.quantize_groups(w, 32)
        back = (q.view(*scale.shape, 32) * scale[..., None] + low[..., None]).view_as(w)
        assert (back - w).abs().max().item() < 1e-6 * w.abs().max().item() + 1e-7, name
        # What a long prefill multiplies with: the same weights, from the stored codes.
        linear = llama.Linear(w, "int4")
        assert torch.allclose(linear.dequantized(), back, rtol=0, atol=1e-7), name
    # The output layer (tied embeddings) came from Q8_0 blocks: 8-bit groups hold it exactly.
    head = weights["model.embed_tokens.weight"]
    q, scale = llama.quantize_groups8(head, 32)
    assert torch.equal((q.view(*scale.shape, 32).float() * scale[..., None]).view_as(head), head)


def test_int4_model_answers_like_full_precision(loaded):
    from model.runtime.engine import Engine
    from model.runtime.loading import load_model

    quick = load_model("default@int4")
    assert quick.quantize == "int4" and quick.name.endswith("@int4")
    question = [{"role": "user", "content": "Write a Python function that reverses a string."}]
    full = "".join(Engine(loaded).generate(question, {"max_new_tokens": 24}))
    fast = "".join(Engine(quick).generate(question, {"max_new_tokens": 24}))
    assert "[::-1]" in fast
    assert fast == full  # measured: identical greedy answers on this prompt (bf16 activations)


def test_native_kernels_equal_the_decoded_weights(tmp_path, monkeypatch):
    """model/runtime/native/qmatmul.c against F.linear on the weights its codes stand for."""
    from model.runtime import native

    native.kernels.cache_clear()
    monkeypatch.setenv("STARCHAT_CACHE_DIR", str(tmp_path))  # a fresh build, as on a new machine
    try:
        assert native.kernels() is not None, "this machine has gcc and AVX2: the kernels must build"
        assert list((tmp_path / "native").glob("qmatmul-*.so"))
        torch.manual_seed(1)
        w = torch.randn(96, 128)
        for kind in ("int4", "int8"):
            linear = llama.Linear(w, kind)
            for rows in (1, 3, 16):
                x = torch.randn(rows, 128)
                torch.testing.assert_close(linear(x), F.linear(x, linear.dequantized()), rtol=1e-4, atol=1e-4)
            assert (linear.dequantized() - w).abs().max() < (0.6 if kind == "int4" else 0.03)
    finally:
        native.kernels.cache_clear()


def test_without_native_kernels_int4_falls_back_to_pytorch(monkeypatch):
    from model.runtime import native

    monkeypatch.setenv("STARCHAT_NATIVE", "0")
    native.kernels.cache_clear()
    try:
        torch.manual_seed(2)
        w = torch.randn(64, 64)
        linear = llama.Linear(w, "int4")
        assert linear.native is None
        x = torch.randn(1, 64)
        torch.testing.assert_close(linear(x).float(), F.linear(x, linear.dequantized()), rtol=0.02, atol=0.05)
        with pytest.raises(ValueError, match="native kernels"):
            llama.Linear(w, "int8")
    finally:
        native.kernels.cache_clear()
