"""Packing: bins are valid, positions restart, and the packed loss equals the unpacked one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from training.packing import (
    PackedCollator,
    PaddingCollator,
    best_fit_decreasing,
    pack_examples,
    packing_efficiency,
)
from training.tokenize import IGNORE_INDEX, tokenize_dialogue

DIALOGUES = [
    [{"role": "user", "content": "Reverse a string?"}, {"role": "assistant", "content": "`s[::-1]`"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sum a list?"},
     {"role": "assistant", "content": "sum(xs)"}, {"role": "user", "content": "Empty list?"},
     {"role": "assistant", "content": "It returns 0."}],
    [{"role": "user", "content": "What is a tuple?"},
     {"role": "assistant", "content": "An immutable sequence, e.g. (1, 2)."}],
]


def test_best_fit_decreasing_places_everything_within_capacity():
    lengths = [7, 5, 5, 4, 3, 3, 2, 1, 1, 9]
    bins = best_fit_decreasing(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 4  # 40 tokens in rows of 10: optimal here
    with pytest.raises(ValueError, match="exceeds the row capacity"):
        best_fit_decreasing([11], 10)


def tiny_model(vocab: int, attn: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    config._attn_implementation = attn
    return LlamaForCausalLM(config).eval()


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position loss of predicting labels[t+1] from position t (NaN where ignored)."""
    loss = F.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=IGNORE_INDEX, reduction="none")
    return torch.where(labels[1:] == IGNORE_INDEX, torch.nan, loss)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_unpacked(starchat_tokenizer, attn):
    tok = starchat_tokenizer
    examples = [tokenize_dialogue(tok, d, 256) for d in DIALOGUES]
    rows = pack_examples(examples, 256)
    assert len(rows) == 1 and sorted(rows[0]["position_ids"]).count(0) == 3
    model = tiny_model(len(tok), attn)
    batch = PackedCollator(tok.pad_token_id, pad_to_multiple_of=64)(rows)
    assert batch["input_ids"].shape[1] % 64 == 0
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       use_cache=False).logits[0]
        packed_loss = model(**batch, use_cache=False).loss
        # The same row with plain positions lets dialogues attend to each other: the
        # comparison below must be able to fail.
        leaky = model(input_ids=batch["input_ids"], use_cache=False).logits[0]

    offset, unpacked_all = 0, []
    for e in examples:  # pack_examples keeps data order inside a row
        n = len(e["input_ids"])
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([e["input_ids"]]), use_cache=False).logits[0]
        want = token_losses(alone, torch.tensor(e["labels"]))
        got = token_losses(packed[offset:offset + n], batch["labels"][0, offset:offset + n])
        torch.testing.assert_close(got, want, equal_nan=True, atol=1e-5, rtol=1e-4)
        if offset:
            bad = token_losses(leaky[offset:offset + n], batch["labels"][0, offset:offset + n])
            assert not torch.allclose(bad.nan_to_num(), want.nan_to_num(), atol=1e-4)
        unpacked_all.append(want[~want.isnan()])
        offset += n
    torch.testing.assert_close(packed_loss, torch.cat(unpacked_all).mean(), atol=1e-5, rtol=1e-4)


def test_padding_collator_and_efficiency(starchat_tokenizer):
    tok = starchat_tokenizer
    examples = [tokenize_dialogue(tok, d, 256) for d in DIALOGUES * 4]
    rows = pack_examples(examples, 128)
    assert packing_efficiency(rows, 128) > 0.6
    assert all(len(r["input_ids"]) <= 128 for r in rows)
    batch = PaddingCollator(tok.pad_token_id)(examples[:3])
    lengths = [len(e["input_ids"]) for e in examples[:3]]
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
