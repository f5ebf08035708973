"""The embedded model loaded straight from its GGUF file can be fine-tuned after make_trainable."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from model.runtime.spec import default_gguf_path
from training.packing import PackedCollator, pack_examples
from training.tokenize import add_chat_tokens, tokenize_dialogue
from training.train import make_trainable

DIALOGUE = [{"role": "user", "content": "Sum a list?"}, {"role": "assistant", "content": "sum(xs)"}]


def test_gguf_loaded_model_trains_one_step(tokenizer, tmp_path):
    gguf = default_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    add_chat_tokens(tokenizer, model, force_template=True)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=1,
                             learning_rate=1e-4, use_cpu=True, report_to="none", save_strategy="no",
                             disable_tqdm=True)
    rows = pack_examples([tokenize_dialogue(tokenizer, DIALOGUE, 64)], 64)
    collator = PackedCollator(tokenizer.pad_token_id)
    # transformers marks a GGUF-loaded model as quantized although its weights are plain
    # floats, and Trainer refuses it: the reason make_trainable exists. Should transformers
    # stop doing so, this fails, and make_trainable can go.
    assert model.hf_quantizer is not None
    with pytest.raises(ValueError, match="quantiz"):
        Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)
    model = make_trainable(model)
    assert model.hf_quantizer is None and not model.is_quantized
    before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    assert not torch.equal(before, model.model.layers[0].self_attn.q_proj.weight)
