"""The converter end to end on real folders: the embedded model, and what `starchat train` writes.

- The de-quantized folder of ``default`` (``model.runtime.loading.local_folder``) exported
  to F16 holds the embedded file's own vocabulary, merges, token types, special ids, chat
  template and pre-tokenizer, and answers greedily as the folder does on torch.
- A folder trained by ``starchat train`` in the StarChat format (4 tokens added) exports
  with those tokens as control tokens that llama.cpp reads as one id each, and answers a
  StarChat prompt as the folder does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.export.runs import check_greedy, eos_ids, gguf_fields, llama_cpp, tokenize

pytest.importorskip("xllamacpp", reason="no llama.cpp wheel for this platform")

DATA = Path(__file__).resolve().parents[2] / "training" / "data" / "code_assistant.jsonl"
QUESTIONS = ("Write a Python function that reverses a string.", "What is 17 * 23?",
             "Explain what a linked list is in two sentences.")
TOKENIZER_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")


def chat_ids(tokenizer, question: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """(the embedded model's de-quantized folder, its F16 export), made once per module."""
    from model.runtime.loading import local_folder
    from training.export import export_folder

    folder = local_folder("default")
    return folder, export_folder(folder, tmp_path_factory.mktemp("embedded") / "default-f16.gguf", "f16")


def test_embedded_model_exports_to_what_it_was(embedded):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model.runtime.spec import default_gguf_path

    folder, path = embedded
    ours, theirs = gguf_fields(path, TOKENIZER_KEYS), gguf_fields(default_gguf_path(), TOKENIZER_KEYS)
    same = [k for k in theirs if k.startswith(("llama.", "tokenizer.")) and k != "tokenizer.ggml.add_space_prefix"]
    assert len(same) > 20
    assert {k: ours.get(k) for k in same} == {k: theirs[k] for k in same}  # sizes, vocabulary, template, pre
    assert set(ours["tensor_types"]) == set(theirs["tensor_types"])  # the same 272 tensors, by gguf's names
    assert {t for n, t in ours["tensor_types"].items() if not n.endswith("norm.weight")} == {"F16"}

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    answers = []
    with llama_cpp(path, n_ctx=256) as server:
        for question in QUESTIONS:
            ids = chat_ids(tokenizer, question)
            answers.append(check_greedy(model, server, ids, eos_ids(folder), 0.1, max_ties=0))  # equal
    assert "[::-1]" in tokenizer.decode(answers[0])  # the real model, answering sensibly


def test_q4_1_export_is_quantized_as_the_embedded_file_is(embedded, tmp_path):
    """What ``starchat adapt --merge`` writes for the embedded model: the same tensor types
    as the file it came from (Q4_1 matrices, the tied embedding Q8_0, norms F32)."""
    from model.runtime.spec import default_gguf_path
    from training.export import export_folder, qtype_like

    assert qtype_like(default_gguf_path()) == "q4_1"
    path = export_folder(embedded[0], tmp_path / "default-q4_1.gguf", "q4_1")
    assert gguf_fields(path)["tensor_types"] == gguf_fields(default_gguf_path())["tensor_types"]
    assert abs(path.stat().st_size - default_gguf_path().stat().st_size) < 0.01 * default_gguf_path().stat().st_size


def test_trained_folder_exports_with_its_added_tokens(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model.prompt.chat_format import STARCHAT_TOKENS
    from training.export import export_folder
    from training.train import main

    run = tmp_path / "run"
    assert main(["--model_name_or_path", str(tiny_models.folder("llama")), "--output_dir", str(run),
                 "--dataset", str(DATA), "--max_samples", "8", "--max_seq_length", "128",
                 "--per_device_train_batch_size", "4", "--max_steps", "2", "--chat_format", "starchat",
                 "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--seed", "0"]) == 0
    path = export_folder(run, tmp_path / "run.gguf", "f16")
    tokenizer = AutoTokenizer.from_pretrained(run)
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in STARCHAT_TOKENS]
    assert new_ids == [49152, 49153, 49154, 49155]
    fields = gguf_fields(path, ("tokenizer.ggml.token_type", "tokenizer.ggml.tokens"))
    assert fields["llama.vocab_size"] == 49156
    assert [fields["tokenizer.ggml.tokens"][i] for i in new_ids] == list(STARCHAT_TOKENS)
    assert [fields["tokenizer.ggml.token_type"][i] for i in new_ids] == [3, 3, 3, 3]  # control tokens
    assert "<|assistant|>" in fields["tokenizer.chat_template"]

    model = AutoModelForCausalLM.from_pretrained(run).eval()
    ids = chat_ids(tokenizer, "def add(a, b):")
    assert set(new_ids) & set(ids)
    with llama_cpp(path) as server:
        text = "<|system|>\n<|end|>\n<|user|>\nhi 42<|end|>\n<|assistant|>\n"
        assert tokenize(server, text) == tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenize(server, "<|end|>") == [new_ids[3]]
        check_greedy(model, server, ids, eos_ids(run), 0.05)
