"""A model folder converted by ``training.export`` runs on llama.cpp as it runs on torch.

For each architecture we train, a tiny random model folder (tests/tiny_models.py) exported
at F16 and F32 gives llama.cpp the same greedy tokens as transformers for 32 steps on
several prompts (sent as token ids), with the same log probabilities up to rounding, and its
tokenizer splits text as the folder's does. Quantized files carry the types asked for.
"""

from __future__ import annotations

import pytest

from tests.export.runs import check_greedy, eos_ids, gguf_fields, llama_cpp, tokenize
from tests.tiny_models import ARCHS

pytest.importorskip("xllamacpp", reason="no llama.cpp wheel for this platform")

TEXTS = (
    "def fib(n):\n    return",
    "<|im_start|>user\nHello 1234 world!<|im_end|>\n<|im_start|>assistant\n",
    "import numpy as np\nx = np.zeros((3, 4))  # ünïcödé, 3.14 ''' \"\"\"\n\n\n\tclass A:",
)
LLAMA_CPP_ARCH = {"llama": "llama", "qwen2": "qwen2", "starcoder2": "starcoder2", "gpt_bigcode": "starcoder"}


@pytest.fixture(scope="module")
def torch_models(tiny_models):
    """(model, tokenizer) per architecture, loaded from the tiny folders once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = {}

    def get(arch):
        if arch not in cache:
            folder = tiny_models.folder(arch)
            cache[arch] = (AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder))
        return cache[arch]

    return get


@pytest.mark.parametrize("qtype", ["F16", "F32"])
@pytest.mark.parametrize("arch", ARCHS)
def test_exported_model_answers_as_the_folder_does(arch, qtype, tiny_models, torch_models):
    model, tokenizer = torch_models(arch)
    path = tiny_models.gguf(arch, qtype)
    fields = gguf_fields(path)
    assert fields["general.architecture"] == LLAMA_CPP_ARCH[arch]
    assert fields[f"{LLAMA_CPP_ARCH[arch]}.block_count"] == 2
    stop = eos_ids(tiny_models.folder(arch))
    tolerance = 0.05 if qtype == "F16" else 2e-3
    with llama_cpp(path) as server:
        for text in TEXTS:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert tokenize(server, text) == ids, text  # the same split, special tokens included
            got = check_greedy(model, server, ids, stop, tolerance)
            assert len(set(got)) > 1 or arch != "llama"  # the untied Llama does not just repeat itself


@pytest.mark.parametrize("arch", ARCHS)
def test_tensor_types_follow_llama_cpp(arch, tiny_models):
    """Norms, biases and learned positions stay F32; matrices take the type asked for; in
    Q4_0 and Q4_1 files the output layer (or the embedding doubling as it) is Q8_0."""
    tied = arch != "llama"
    for qtype, main in (("F16", "F16"), ("Q8_0", "Q8_0"), ("Q4_0", "Q4_0"), ("Q4_1", "Q4_1")):
        types = gguf_fields(tiny_models.gguf(arch, qtype))["tensor_types"]
        assert {t for n, t in types.items() if n.endswith(("_norm.weight", ".bias"))} == {"F32"}
        assert types["blk.1.ffn_down.weight"] == main
        assert ("output.weight" in types) == (not tied)
        head = "token_embd.weight" if tied else "output.weight"
        assert types[head] == ("Q8_0" if qtype in ("Q4_0", "Q4_1") else main)
        if arch == "gpt_bigcode":
            assert types["position_embd.weight"] == "F32"


def test_a_name_llama_cpp_would_take_for_phi_3_is_written_without_it():
    """llama.cpp looks up Phi-3's tokens by text in any file named *phi-3*/*phi3* and fails
    to load one without them (the tiny Phi-3-template model of the template tests did)."""
    from training.export.vocab import PHI3_TOKENS, model_name

    assert model_name("my-phi3-run", ["a", "b"]) == "my-phi 3-run"
    assert model_name("llama-Phi-3", ["<s>"]) == "llama-Phi 3"
    assert model_name("Phi-3-mini", list(PHI3_TOKENS)) == "Phi-3-mini"  # a real Phi-3 vocabulary
    assert model_name("smollm2", []) == "smollm2"
