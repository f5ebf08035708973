"""The ZeRO-3 config: accepted by TrainingArguments, and a real (CPU, 1-process) run decays the LR."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainingArguments

from training.progress import read_log

ROOT = Path(__file__).resolve().parents[2]
DS_CONFIG = ROOT / "training" / "configs" / "deepspeed_z3_bf16.json"


def test_zero3_config_is_accepted_and_has_no_scheduler(tmp_path):
    raw = json.loads(DS_CONFIG.read_text())
    # A scheduler block would replace the Trainer's cosine schedule (the StarChat original's bug).
    assert "scheduler" not in raw
    assert raw["zero_optimization"]["stage"] == 3
    assert raw["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    # use_cpu: there is no GPU here; bf16 "auto" must follow the Trainer's flag.
    args = TrainingArguments(output_dir=str(tmp_path), deepspeed=str(DS_CONFIG), bf16=True, use_cpu=True,
                             per_device_train_batch_size=4, gradient_accumulation_steps=8,
                             lr_scheduler_type="cosine", report_to="none")
    ds = args.hf_deepspeed_config
    ds.trainer_config_process(args)
    assert ds.is_zero3()
    assert ds.config["bf16"]["enabled"] is True and ds.config["fp16"]["enabled"] is False
    assert ds.config["train_micro_batch_size_per_gpu"] == 4
    assert ds.config["gradient_accumulation_steps"] == 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_zero3_run_decays_lr_and_saves_full_weights(tmp_path, tokenizer):
    """One process under ZeRO-3 on the CPU accelerator, as `deepspeed`/`torchrun` would start it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer
    torch.manual_seed(0)
    model_dir = tmp_path / "tiny"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 tie_word_embeddings=True)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "out"
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0",
               WORLD_SIZE="1", TORCH_EXTENSIONS_DIR=os.environ.get(
                   "TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions")))
    cmd = [sys.executable, "-m", "training.train", "--model_name_or_path", str(model_dir),
           "--output_dir", str(out), "--deepspeed", str(DS_CONFIG), "--use_cpu", "true",
           "--max_steps", "6", "--per_device_train_batch_size", "2", "--max_seq_length", "128",
           "--max_samples", "16", "--logging_steps", "1", "--learning_rate", "1e-3",
           "--lr_scheduler_type", "cosine", "--chat_format", "starchat", "--save_strategy", "no",
           "--report_to", "none"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rates = [r["learning_rate"] for r in read_log(out) if "learning_rate" in r]
    assert len(rates) == 6
    assert rates[0] == pytest.approx(1e-3) and rates[-1] < 0.1 * rates[0]
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    # 16-bit weights gathered on save: full matrices, not empty ZeRO-3 shards.
    weights = load_file(str(out / "model.safetensors"))
    assert weights["model.embed_tokens.weight"].shape == (len(tok) + 4, 64)
    saved = json.loads((out / "generation_config.json").read_text())
    assert saved["eos_token_id"] == len(tok) + 3  # <|end|>, the last of the four new tokens
