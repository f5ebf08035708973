"""Exact labels, special tokens and agreement with the chat template, on the real tokenizer."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from model.prompt.chat_format import STARCHAT_TOKENS, chat_format_for, encode_text
from training.tokenize import (
    IGNORE_INDEX,
    add_chat_tokens,
    end_of_turn_id,
    tokenize_dialogue,
    tokenize_dialogues,
)

M = IGNORE_INDEX
DIALOGUE = [
    {"role": "system", "content": "You are a coding assistant."},
    {"role": "user", "content": "Reverse a string in Python?"},
    {"role": "assistant", "content": "Use slicing: `s[::-1]`."},
    {"role": "user", "content": "And a list?"},
    {"role": "assistant", "content": "`items[::-1]` or `items.reverse()`."},
]


def ids(tok, *tokens):
    return [tok.convert_tokens_to_ids(t) for t in tokens]


def starchat_expected(tok, messages):
    """Build ids/labels by hand from the StarChat format definition."""
    nl = encode_text(tok, "\n")
    (end,) = ids(tok, "<|end|>")
    input_ids, labels = [], []
    for m in messages:
        header = ids(tok, f"<|{m['role']}|>") + nl
        content = encode_text(tok, m["content"])
        input_ids += header + content + [end] + nl
        if m["role"] == "assistant":
            labels += [M] * len(header) + content + [end] + [M] * len(nl)
        else:
            labels += [M] * (len(header) + len(content) + 1 + len(nl))
    return input_ids, labels


def test_four_tokens_one_id_each_and_embeddings_resized(tokenizer):
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2))
    before = len(tokenizer)
    add_chat_tokens(tokenizer, model)
    new = ids(tokenizer, *STARCHAT_TOKENS)
    assert new == list(range(before, before + 4))
    for token, token_id in zip(STARCHAT_TOKENS, new, strict=True):
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [token_id]
        assert tokenizer.decode([token_id]) == token
    assert model.get_input_embeddings().weight.shape[0] == before + 4
    # Adding again is a no-op: no duplicate ids, no second resize.
    add_chat_tokens(tokenizer, model)
    assert len(tokenizer) == before + 4 and model.get_input_embeddings().weight.shape[0] == before + 4


def test_own_template_is_kept_unless_forced(tokenizer):
    chatml = tokenizer.chat_template
    assert "<|im_start|>" in chatml
    add_chat_tokens(tokenizer)
    assert tokenizer.chat_template == chatml
    add_chat_tokens(tokenizer, force_template=True)
    assert "<|assistant|>" in tokenizer.chat_template
    assert tokenizer.convert_ids_to_tokens(end_of_turn_id(tokenizer)) == "<|end|>"


def test_starchat_labels_exact_multi_turn_with_system(starchat_tokenizer):
    tok = starchat_tokenizer
    got = tokenize_dialogue(tok, DIALOGUE, 4096)
    want_ids, want_labels = starchat_expected(tok, DIALOGUE)
    assert got["input_ids"] == want_ids
    assert got["labels"] == want_labels
    labelled = tok.decode([t for t in got["labels"] if t != M])
    assert labelled == "Use slicing: `s[::-1]`.<|end|>`items[::-1]` or `items.reverse()`.<|end|>"


def test_whitespace_edges_are_kept_exactly(starchat_tokenizer):
    tok = starchat_tokenizer
    messages = [
        {"role": "user", "content": "\n\n  indented question  \n"},
        {"role": "assistant", "content": "\n```python\nx = 1\n```\n\n"},
        {"role": "user", "content": " leading space"},
        {"role": "assistant", "content": "trailing spaces   "},
    ]
    got = tokenize_dialogue(tok, messages, 4096)
    want_ids, want_labels = starchat_expected(tok, messages)
    assert (got["input_ids"], got["labels"]) == (want_ids, want_labels)
    assert tok.decode(got["input_ids"]) == tok.apply_chat_template(messages, tokenize=False)
    labelled = tok.decode([t for t in got["labels"] if t != M])
    assert labelled == "\n```python\nx = 1\n```\n\n<|end|>trailing spaces   <|end|>"


def test_control_token_strings_in_content_stay_text(starchat_tokenizer):
    tok = starchat_tokenizer
    messages = [
        {"role": "user", "content": "What does <|end|> mean? And <|im_end|><|assistant|>?"},
        {"role": "assistant", "content": "They are markers; <|end|> closes a turn."},
    ]
    got = tokenize_dialogue(tok, messages, 4096)
    special = set(ids(tok, *STARCHAT_TOKENS, "<|im_end|>", "<|im_start|>"))
    # Exactly the template's own markers are special: 2 headers + 2 ends.
    assert sum(t in special for t in got["input_ids"]) == 4
    assert got["input_ids"] == starchat_expected(tok, messages)[0]
    assert tok.decode(got["input_ids"]) == tok.apply_chat_template(messages, tokenize=False)


def test_truncation_in_user_turn_keeps_earlier_labels(starchat_tokenizer):
    tok = starchat_tokenizer
    full = tokenize_dialogue(tok, DIALOGUE, 4096)
    user = ids(tok, "<|user|>")[0]
    second_user_start = [i for i, t in enumerate(full["input_ids"]) if t == user][1]
    cut = second_user_start + 4  # inside the second user turn
    short = tokenize_dialogue(tok, DIALOGUE, cut)
    assert short["input_ids"] == full["input_ids"][:cut]
    assert short["labels"] == full["labels"][:cut]
    assert tok.decode([t for t in short["labels"] if t != M]) == "Use slicing: `s[::-1]`.<|end|>"


def test_rows_without_labelled_tokens_are_dropped(starchat_tokenizer):
    tok = starchat_tokenizer
    long_question = {"messages": [{"role": "user", "content": "word " * 300},
                                  {"role": "assistant", "content": "ok"}]}
    short = {"messages": DIALOGUE}
    kept = tokenize_dialogues(tok, [long_question, short], max_length=64)
    assert len(kept) == 1 and kept[0]["input_ids"] == tokenize_dialogue(tok, DIALOGUE, 64)["input_ids"]


def test_equals_template_rendering_in_both_formats(tokenizer):
    # ChatML (the tokenizer's own template, with its default system prompt) ...
    messages = DIALOGUE[1:]
    got = tokenize_dialogue(tokenizer, messages, 4096)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert got["input_ids"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    labelled = tokenizer.decode([t for t in got["labels"] if t != M])
    assert labelled == "Use slicing: `s[::-1]`.<|im_end|>`items[::-1]` or `items.reverse()`.<|im_end|>"
    assert "SmolLM" in tokenizer.decode(got["input_ids"])  # the template's default system turn
    # ... and StarChat's.
    add_chat_tokens(tokenizer, force_template=True)
    got = tokenize_dialogue(tokenizer, DIALOGUE, 4096)
    rendered = tokenizer.apply_chat_template(DIALOGUE, tokenize=False)
    assert got["input_ids"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_training_prefix_matches_the_served_prompt(tokenizer):
    # The server encodes the conversation so far plus the assistant header; training must
    # have seen exactly those ids before the labelled reply.
    for force in (False, True):
        if force:
            add_chat_tokens(tokenizer, force_template=True)
        got = tokenize_dialogue(tokenizer, DIALOGUE, 4096)
        prompt = chat_format_for(tokenizer).encode(DIALOGUE[:-1], add_generation_prompt=True)
        last_reply = encode_text(tokenizer, DIALOGUE[-1]["content"])
        assert got["input_ids"][: len(prompt)] == prompt
        assert got["input_ids"][len(prompt): len(prompt) + len(last_reply)] == last_reply
        assert got["labels"][len(prompt) - 1] == M and got["labels"][len(prompt)] == last_reply[0]


def test_labels_are_plain_ints_usable_as_tensors(starchat_tokenizer):
    got = tokenize_dialogue(starchat_tokenizer, DIALOGUE, 4096)
    assert len(got["input_ids"]) == len(got["labels"])
    assert torch.tensor(got["labels"]).dtype == torch.long


def test_end_token_can_start_as_the_old_end_of_turn(tokenizer):
    from training.tokenize import copy_token_embedding

    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2, tie_word_embeddings=False))
    old_end = end_of_turn_id(tokenizer)  # <|im_end|> under the ChatML template
    add_chat_tokens(tokenizer, model, force_template=True)
    new_end = end_of_turn_id(tokenizer)
    assert tokenizer.convert_ids_to_tokens([old_end, new_end]) == ["<|im_end|>", "<|end|>"]
    copy_token_embedding(model, old_end, new_end)
    for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
        assert torch.equal(weight[new_end], weight[old_end])
    assert not torch.equal(model.get_input_embeddings().weight[new_end - 1],
                           model.get_input_embeddings().weight[old_end])
