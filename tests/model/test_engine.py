"""The streaming engine on the real embedded model."""

from __future__ import annotations

import threading

import pytest
import torch

from model.runtime.engine import Engine

QUESTION = [{"role": "user", "content": "Write a Python function is_even(n)."}]


def test_stream_is_greedy_equal_to_model_generate(engine, loaded, hf_loaded):
    assert loaded.runner_kind == "lean" and hf_loaded.runner_kind == "transformers"
    stream = engine.generate(QUESTION, {"max_new_tokens": 40})
    deltas = list(stream)
    assert len(deltas) > 5  # streamed, not one blob
    ids = engine.chat_format.encode(QUESTION)
    assert ids == Engine(hf_loaded).chat_format.encode(QUESTION)  # same prompt from both tokenizers
    with torch.inference_mode():
        out = hf_loaded.model.generate(torch.tensor([ids]), max_new_tokens=40, do_sample=False)
    expected = hf_loaded.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    assert "".join(deltas) == expected
    assert "def is_even" in "".join(deltas)
    u = stream.usage
    assert u["prompt_tokens"] == len(ids) and u["tokens"] == 40 and stream.finish_reason == "length"
    assert u["ttft_s"] > 0 and u["tok_per_s"] > 0


def test_stops_at_end_of_turn_by_itself(engine):
    stream = engine.generate([{"role": "user", "content": "Say just the word: yes"}], {"max_new_tokens": 60})
    text = "".join(stream)
    assert stream.finish_reason == "stop" and "<|im_end|>" not in text and text.strip()


def test_stop_string_is_never_emitted(engine):
    full = "".join(engine.generate(QUESTION, {"max_new_tokens": 30}))
    marker = full.split("\n")[1][:6]  # a piece of text the model will produce
    stream = engine.generate(QUESTION, {"max_new_tokens": 30, "stop": [marker]})
    text = "".join(stream)
    assert marker not in text and stream.finish_reason == "stop"
    assert full.startswith(text)


def test_cancel_stops_within_one_step(engine):
    cancel = threading.Event()
    stream = engine.generate(QUESTION, {"max_new_tokens": 200}, cancel)
    seen = 0
    for _ in stream:
        seen += 1
        if seen == 3:
            cancel.set()
    assert stream.finish_reason == "cancelled"
    assert stream.usage["tokens"] <= 4


def test_sampling_is_seeded(engine):
    p = {"max_new_tokens": 20, "temperature": 0.9, "top_p": 0.9, "top_k": 40, "seed": 7}
    assert "".join(engine.generate(QUESTION, p)) == "".join(engine.generate(QUESTION, p))


def test_batched_steps_give_each_request_its_own_answer(engine):
    prompts = ["What is a Python list?", "Write a Python function that checks if a number is prime.",
               "Explain recursion in one paragraph."]
    solo = ["".join(engine.generate([{"role": "user", "content": p}], {"max_new_tokens": 24})) for p in prompts]
    engine.clear_prefix_cache()
    decoders = [engine.decoder(engine.chat_format.encode([{"role": "user", "content": p}]),
                               {"max_new_tokens": 24 if i else 8}) for i, p in enumerate(prompts)]
    texts = [d.step() for d in decoders]  # prefill one by one
    while any(not d.done for d in decoders):
        live = [d for d in decoders if d.decoding]
        for d, delta in zip(live, engine.step_batch(live), strict=True):
            texts[decoders.index(d)] += delta
    assert texts[1:] == solo[1:]  # prompts of different lengths, left-padded together
    assert solo[0].startswith(texts[0]) and decoders[0].finish_reason == "length"  # finished early, alone


def test_transformers_runner_streams_the_same_answer(engine, hf_loaded):
    """The fallback runner (any architecture) and our own forward pass agree, batch included."""
    hf_engine = Engine(hf_loaded)
    questions = [QUESTION, [{"role": "user", "content": "What does a mutex do?"}]]
    own = ["".join(engine.generate(q, {"max_new_tokens": 24})) for q in questions]
    decoders = [hf_engine.decoder(hf_engine.chat_format.encode(q), {"max_new_tokens": 24}) for q in questions]
    for d in decoders:
        d.step()  # prefill
    while not all(d.done for d in decoders):
        hf_engine.step_batch([d for d in decoders if not d.done])
    assert [d.text for d in decoders] == own


def test_empty_prompt_is_a_clear_error(engine):
    with pytest.raises(ValueError, match="prompt is empty"):
        engine.generate([], {"max_new_tokens": 4})


def test_half_a_character_waits_for_its_next_token_and_a_stop_start_for_more(engine):
    """``Decoder._flush`` through the shared stop filter (model.prompt.stops), on the real
    tokenizer: an emoji is several byte tokens, and a stop string's start is held back."""
    ids = engine.tokenizer.encode("ok \U0001F600\nHuman: hi", add_special_tokens=False)
    assert any(engine.tokenizer.decode(ids[:i]).endswith("\ufffd") for i in range(len(ids)))  # (split)
    d = engine.decoder([1], {"max_new_tokens": 64, "stop": ["\nHuman:"]})
    shown = []
    for i in range(1, len(ids) + 1):
        d.generated = ids[:i]
        shown.append(d._flush(final=False))
        assert "\ufffd" not in "".join(shown) and "\n" not in "".join(shown)
    assert "".join(shown) == "ok \U0001F600" and d.done and d.finish_reason == "stop"
