"""The trainer end to end on tiny models over the real tokenizer: it learns, decays, saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from training.progress import read_log
from training.train import main

DATA = Path(__file__).resolve().parents[2] / "training" / "data" / "code_assistant.jsonl"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tokenizer_dir):
    """A 2-layer Llama with the embedded model's real tokenizer, saved like any checkpoint."""
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def common_args(model_dir: Path, out: Path) -> list[str]:
    return ["--model_name_or_path", str(model_dir), "--output_dir", str(out), "--dataset", str(DATA),
            "--max_samples", "24", "--max_seq_length", "256", "--per_device_train_batch_size", "4",
            "--max_steps", "12", "--logging_steps", "1", "--learning_rate", "3e-3",
            "--lr_scheduler_type", "cosine", "--chat_format", "starchat", "--save_strategy", "no",
            "--report_to", "none", "--use_cpu", "true", "--seed", "0"]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def check_served_folder(out: Path) -> int:
    """What the server relies on: template, one-id tokens, eos = <|end|>."""
    tok = AutoTokenizer.from_pretrained(out)
    end_id = tok.convert_tokens_to_ids("<|end|>")
    assert tok("<|end|>", add_special_tokens=False)["input_ids"] == [end_id]
    assert "<|assistant|>" in tok.chat_template
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == end_id
    return end_id


def test_full_fine_tune_learns_decays_and_saves(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    assert main(common_args(tiny_model_dir, out)) == 0
    before, after = weights(tiny_model_dir), weights(out)
    assert after["model.embed_tokens.weight"].shape[0] == before["model.embed_tokens.weight"].shape[0] + 4
    changed = [k for k in before if k != "model.embed_tokens.weight" and not torch.equal(before[k], after[k])]
    assert len(changed) == len(before) - 1  # every other tensor trained
    records = [r for r in read_log(out) if "loss" in r]
    assert len(records) == 12
    losses = [r["loss"] for r in records]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    rates = [r["learning_rate"] for r in records]
    assert rates[0] == pytest.approx(3e-3) and rates[-1] < 0.05 * rates[0]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))  # cosine decays monotonically
    assert (out / "loss_curve.png").stat().st_size > 1000
    end_id = check_served_folder(out)
    # The new rows were trained too (the <|end|> row is labelled in every dialogue).
    assert after["model.embed_tokens.weight"][end_id].abs().sum() > 0


def test_lora_trains_new_token_rows_and_merges(tiny_model_dir, tmp_path):
    out = tmp_path / "lora"
    args = common_args(tiny_model_dir, out) + ["--use_lora", "true", "--lora_r", "4",
                                                 "--lora_target_modules", "q_proj", "v_proj"]
    assert main(args) == 0
    end_id = check_served_folder(out)
    merged = weights(out)
    assert not any("lora" in k for k in merged)  # a plain model folder, adapters merged
    before = weights(tiny_model_dir)
    assert not torch.equal(before["model.layers.0.self_attn.q_proj.weight"],
                           merged["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(before["model.layers.0.mlp.up_proj.weight"], merged["model.layers.0.mlp.up_proj.weight"])
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == end_id + 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "/nonexistent/data.jsonl"], "no such file"),
        (["--chat_format", "chatml"], "chat_format must be auto or starchat"),
        (["--model_name_or_path", "/nonexistent/model"], "does not exist"),
        (["--no_such_setting", "1"], "Unknown override"),
        (["--lora_top_layers", "-1"], "lora_top_layers must be 0 (every layer) or more"),
        (["--use_lora", "true", "--lora_top_layers", "3"], "lora_top_layers is 3, but the model has 2 layers"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(tiny_model_dir, tmp_path, capsys, extra, message):
    assert main(common_args(tiny_model_dir, tmp_path / "x") + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_yaml_recipe_with_overrides_and_unknown_keys(tiny_model_dir, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model_name_or_path: {tiny_model_dir}\ndataset: {DATA}\nmax_steps: 1000\n"
                      "max_seq_length: 128\nmax_samples: 8\nreport_to: none\nsave_strategy: 'no'\n"
                      "use_cpu: true\nlearning_rate: 1.0e-3\n")
    out = tmp_path / "o"
    assert main([str(recipe), "--max_steps", "2", "--output_dir", str(out)]) == 0
    assert max(r["step"] for r in read_log(out)) == 2  # the override won
    recipe.write_text("lerning_rate: 1.0\n")
    assert main([str(recipe)]) == 2
    assert "unknown setting 'lerning_rate'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "max_seq_length" in capsys.readouterr().out
