"""Repetition control (``model.runtime.repetition``): DRY once the answer repeats itself.

The watch and the penalty are checked on their own; then both engines on the embedded
model, greedy, with a prompt that makes it loop: the same line four times, which the model
goes on writing with DRY off (checked, so the test can fail), and stops writing with the
default once its answer holds the line twice.
"""

from __future__ import annotations

import threading

import pytest

from benchmarks.common import repeated_runs, repeated_units
from model.prompt.chat_format import encode_text
from model.prompt.params import GenerationParams
from model.runtime.repetition import MIN_CHARS, RepeatWatch, dry_penalties
from model.runtime.spec import default_gguf_path

LINE = "The build failed because the cache was stale.\n"
GREEDY = GenerationParams(max_new_tokens=80, temperature=0.0)


def feed_all(text: str, piece: int) -> int | None:
    """Feed ``text`` in pieces of ``piece`` characters; the offset at which the watch fired."""
    watch = RepeatWatch()
    for at in range(0, len(text), piece):
        if watch.feed(text[at:at + piece]):
            return at + piece
    return None


def test_watch_fires_when_a_line_completes_the_second_time():
    text = "First a line of some length.\nSecond line, also long.\nFirst a line of some length.\nmore"
    second_end = text.index("more")
    for piece in (1, 3, 7, len(text)):  # how the text is cut into deltas does not matter
        fired = feed_all(text, piece)
        assert fired is not None and second_end - 1 <= fired <= second_end + piece, (piece, fired)
    assert feed_all("First a line of some length.\nFirst a line of some length", 1) is None  # not finished


def test_watch_counts_sentences_and_ignores_short_lines():
    assert feed_all("It is not specified here. It is not specified here. ", 1) is not None
    assert feed_all("return x\nreturn x\nreturn x\n}\n}\n}\n", 1) is None  # under MIN_CHARS
    assert len("It is not specified here.") >= MIN_CHARS
    assert feed_all("   spaced   out   line   here\nspaced out line here\n", 2) is not None  # whitespace collapsed


def test_dry_penalties_follow_llamacpp():
    # 5 6 7 | 8 ... 5 6 7: the sequence before the end repeats (length 3): 8 would extend it
    assert dry_penalties([5, 6, 7, 8, 5, 6, 7], set()) == {8: pytest.approx(0.8 * 1.75 ** 1)}
    assert dry_penalties([5, 6, 7, 8, 5, 6, 7], set(), allowed_length=4) == {}  # too short
    assert dry_penalties([5, 6, 7, 8, 5, 6, 7], {6}) == {}  # a breaker ends the match at 7
    # the longest match per token counts: 9 follows "3 7" (2) and "2 3 7" (3)
    assert dry_penalties([1, 3, 7, 9, 2, 3, 7, 9, 4, 2, 3, 7], set()) == {9: pytest.approx(0.8 * 1.75 ** 1)}
    assert dry_penalties([1, 2], set()) == {}


def test_the_benchmarks_loop_measures():
    """What bench_model counts as looping: a line or sentence 3+ times; an 8-word run 3+ times."""
    assert repeated_units(LINE * 3) == [LINE.strip()] and repeated_units(LINE * 2) == []
    assert repeated_units("ok\n" * 5) == []  # short lines do not count
    prose = "we add the cache and then we add the tests " * 3
    assert repeated_runs(prose) and not repeated_units(prose)  # one line: only runs see it
    assert repeated_runs("one two three four five six seven eight nine ten") == []


def test_llamacpp_answer_stops_looping_once_it_repeats():
    from model.runtime import llamacpp_engine

    engine = llamacpp_engine.load(default_gguf_path(), slots=1)
    bodies: list[dict] = []

    class Recorder:  # the real server; each request body is kept
        def __init__(self, server):
            self.server = server

        def handle_completions(self, body, callback):
            bodies.append(body)
            return self.server.handle_completions(body, callback)

    engine.server = Recorder(engine.server)
    ids = encode_text(engine.tokenizer, LINE * 4)
    try:
        engine.dry = {}
        off: list[str] = []
        engine.run(ids, GREEDY, threading.Event(), off.append)
        assert "".join(off).count(LINE) >= 3 and len(bodies) == 1  # DRY off: it loops

        engine.dry = llamacpp_engine.DEFAULT_DRY
        bodies.clear()
        on: list[str] = []
        outcome = engine.run(ids, GREEDY, threading.Event(), on.append)

        # a cancel while the answer goes on with DRY: no delta after it, reported as such
        bodies.clear()
        cancel, after = threading.Event(), []

        def cancel_in_second_request(text: str) -> None:
            if cancel.is_set():
                after.append(text)
            elif len(bodies) >= 2:
                cancel.set()

        cancelled = engine.run(ids, GREEDY, cancel, cancel_in_second_request)
        assert len(bodies) == 2 and cancel.is_set() and after == [] and cancelled.finish_reason == "cancelled"
    finally:
        engine.server = None
    text = "".join(on)
    assert text.count(LINE) == 2 and not repeated_units(text) and not repeated_runs(text), text
    assert "dry_multiplier" not in bodies[0]  # no DRY until the answer repeats itself
    assert len(bodies) >= 2 and all(b["dry_multiplier"] > 0 for b in bodies[1:])
    first_answer = len(bodies[1]["prompt"]) - len(ids)
    assert 0 < bodies[1]["dry_penalty_last_n"] <= first_answer  # the answer's tokens, not the prompt's
    assert outcome.usage["tokens"] == pytest.approx(len(encode_text(engine.tokenizer, text)), abs=4)
    assert outcome.usage["prompt_tokens"] == len(ids)
    # the first request was ended by our callback: its counters come from the last chunk
    assert outcome.usage["cached_prompt_tokens"] >= len(ids) // 2  # the DRY-off run cached the prompt


def test_torch_answer_stops_looping_once_it_repeats(engine):
    ids = encode_text(engine.tokenizer, LINE * 4)
    off = engine.decoder(ids, GREEDY, dry=False)
    text_off = "".join(_drain(off))
    assert text_off.count(LINE) >= 3  # DRY off: it loops
    on = engine.decoder(ids, GREEDY)
    text_on = "".join(_drain(on))
    assert on.dry_on and text_on.count(LINE) == 2 and not repeated_units(text_on), text_on
    code = engine.decoder(ids, GREEDY, heal="The")  # completions (healed) go without
    "".join(_drain(code))
    assert code.watch is None and not code.dry_on


def _drain(decoder):
    while not decoder.done:
        yield decoder.step()
