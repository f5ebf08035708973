"""The StarCoder family through the recipe: tiny random gpt_bigcode and starcoder2 models.

Base models without a chat template (as StarCoderBase is), over the embedded tokenizer: the
StarChat tokens are added (one id each, embeddings resized), labels cover assistant turns only,
dialogues are packed, a full fine-tune and LoRA ``all-linear`` (StarCoder's c_attn/c_proj/c_fc,
not Llama's names) train, save, load and answer. Under ZeRO-3 with 2 ranks the same models
run in test_multiprocess.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from model.prompt.chat_format import STARCHAT_TOKENS
from training.progress import read_log
from training.tokenize import IGNORE_INDEX, tokenize_dialogues
from training.train import main

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "training" / "data" / "code_assistant.jsonl"
ARCHS = ("gpt_bigcode", "starcoder2")
# What peft's all-linear must reach in each family (every Linear but the output layer).
LINEAR_SUFFIXES = {
    "gpt_bigcode": ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"),
    "starcoder2": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                   "self_attn.o_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"),
}
EMBEDDING = {"gpt_bigcode": "transformer.wte.weight", "starcoder2": "model.embed_tokens.weight"}


@pytest.fixture(scope="module", params=ARCHS)
def base(request, tmp_path_factory):
    from tests.tiny_models import tiny_folder

    arch = request.param
    return arch, tiny_folder(arch, tmp_path_factory.mktemp(f"base-{arch}"), template="none")


def run_recipe(model_dir: Path, out: Path, *extra: str) -> None:
    args = ["--model_name_or_path", str(model_dir), "--output_dir", str(out), "--dataset", str(DATA),
            "--max_samples", "16", "--max_seq_length", "128", "--per_device_train_batch_size", "4",
            "--max_steps", "6", "--logging_steps", "1", "--learning_rate", "3e-3",
            "--lr_scheduler_type", "cosine", "--chat_format", "auto", "--packing", "true",
            "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--seed", "0", *extra]
    assert main(args) == 0


def check_tokens_and_labels(out: Path, vocab: int) -> int:
    tok = AutoTokenizer.from_pretrained(out)
    ids = [tok.convert_tokens_to_ids(t) for t in STARCHAT_TOKENS]
    assert sorted(ids) == list(range(vocab, vocab + 4))  # four new ids, appended
    for token, token_id in zip(STARCHAT_TOKENS, ids, strict=True):
        assert tok(token, add_special_tokens=False)["input_ids"] == [token_id]
    assert "<|assistant|>" in tok.chat_template  # a base model gets StarChat's template
    # Assistant-only labels: the labelled tokens are exactly the assistant turns and their <|end|>.
    dialogue = {"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Add two numbers."},
                             {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
                             {"role": "user", "content": "Thanks"},
                             {"role": "assistant", "content": "You're welcome."}]}
    (example,) = tokenize_dialogues(tok, [dialogue], 512)
    labelled = [t for t in example["labels"] if t != IGNORE_INDEX]
    assert tok.decode(labelled) == "def add(a, b):\n    return a + b<|end|>You're welcome.<|end|>"
    return tok.convert_tokens_to_ids("<|end|>")


def answers(out: Path) -> None:
    from model.runtime.engine import Engine
    from model.runtime.loading import load_model

    engine = Engine(load_model(str(out)))
    assert engine.chat_format.stop_token_ids  # <|end|> stops it
    stream = engine.generate([{"role": "user", "content": "Write a Python function."}], {"max_new_tokens": 6})
    "".join(stream)
    # Random weights: any tokens, or an at-once <|end|> (the new rows start near the mean
    # embedding, so an untrained tied head may rank <|end|> first). It ran to a proper end.
    assert stream.finish_reason in ("stop", "length")
    assert stream.usage["prompt_tokens"] > 10 and stream.usage["tokens"] <= 6


def test_full_fine_tune(base, tmp_path, caplog):
    arch, folder = base
    out = tmp_path / "full"
    caplog.set_level(logging.INFO, logger="training.train")
    run_recipe(folder, out)
    assert "packed rows" in caplog.text  # several dialogues per row
    before, after = load_file(str(folder / "model.safetensors")), load_file(str(out / "model.safetensors"))
    vocab = before[EMBEDDING[arch]].shape[0]
    assert after[EMBEDDING[arch]].shape[0] == vocab + 4  # resized for the StarChat tokens
    assert set(after) == set(before)
    unchanged = [k for k in before if torch.equal(before[k], after[k][: before[k].shape[0]])]
    assert unchanged == []  # every tensor trained
    end_id = check_tokens_and_labels(out, vocab)
    assert after[EMBEDDING[arch]][end_id].abs().sum() > 0
    rates = [r["learning_rate"] for r in read_log(out) if "loss" in r]
    assert len(rates) == 6 and rates[-1] < rates[0]
    answers(out)


def test_lora_all_linear(base, tmp_path):
    arch, folder = base
    out = tmp_path / "lora"
    run_recipe(folder, out, "--use_lora", "true", "--lora_r", "4", "--lora_target_modules", "all-linear",
               "--learning_rate", "1e-2")
    before, after = load_file(str(folder / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert not any("lora" in k for k in after)  # merged into a plain folder
    vocab = before[EMBEDDING[arch]].shape[0]
    linears = [k for k in before if k.endswith(LINEAR_SUFFIXES[arch])]
    assert len(linears) == 2 * len(LINEAR_SUFFIXES[arch])  # 2 layers
    assert [k for k in linears if torch.equal(before[k], after[k])] == []  # adapters on every one
    norms = [k for k in before if "norm" in k or ".ln_" in k]
    assert norms and all(torch.equal(before[k], after[k]) for k in norms)  # the rest stays frozen
    check_tokens_and_labels(out, vocab)
    # Only the four new rows of the embedding are trainable (trainable_token_indices on wte /
    # embed_tokens, found by module, not by Llama's name); the old rows stay as they were.
    assert torch.equal(before[EMBEDDING[arch]], after[EMBEDDING[arch]][:vocab])
    answers(out)
