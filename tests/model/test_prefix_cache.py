"""Prefix reuse: a second turn prefills only its new tokens and answers the same."""

from __future__ import annotations

from model.runtime.prefix_cache import PrefixCache

TURN1 = [{"role": "system", "content": "You are terse."},
         {"role": "user", "content": "Write a Python function that adds two numbers."}]


def test_second_turn_reuses_the_first_and_answers_identically(engine):
    engine.clear_prefix_cache()
    first = engine.generate(TURN1, {"max_new_tokens": 24})
    reply = "".join(first)
    assert first.usage["cached_prompt_tokens"] == 0
    turn2 = TURN1 + [{"role": "assistant", "content": reply}, {"role": "user", "content": "Now multiply."}]
    second = engine.generate(turn2, {"max_new_tokens": 16})
    text = "".join(second)
    prompt = second.usage["prompt_tokens"]
    assert second.usage["cached_prompt_tokens"] >= first.usage["prompt_tokens"]  # turn 1 not prefilled again
    assert prompt - second.usage["cached_prompt_tokens"] < 20
    engine.clear_prefix_cache()
    fresh = engine.generate(turn2, {"max_new_tokens": 16})
    assert "".join(fresh) == text  # reuse changes speed, never the answer
    assert fresh.usage["cached_prompt_tokens"] == 0


def test_lru_respects_the_byte_cap(engine):
    store = PrefixCache(max_bytes=1)  # nothing fits
    s = engine.decoder(engine.chat_format.encode(TURN1), {"max_new_tokens": 2})
    s.engine.prefix_cache, saved = store, s.engine.prefix_cache
    try:
        while not s.done:
            s.step()
    finally:
        s.engine.prefix_cache = saved
    assert len(store) == 0 and store.nbytes == 0
