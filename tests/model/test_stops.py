"""The one stop-string filter (``model.prompt.stops``) that the torch decoder and llama.cpp's
healed completions share."""

from __future__ import annotations

from model.prompt.fim import Healing
from model.prompt.stops import StopFilter


def test_a_stop_split_over_pieces_is_cut_and_its_start_never_shown():
    f = StopFilter(["\n\n"])
    assert f.feed("def f():") == "def f():"
    assert f.feed("\n") == ""  # may become the stop
    assert f.feed("    pass\n") == "\n    pass"  # it did not; the new "\n" waits
    assert f.feed("\nx = 1") == "" and f.stopped and f.text == "def f():\n    pass"
    assert f.feed("more") == "" and f.finish() == ""


def test_the_held_back_end_is_shown_when_the_answer_ends():
    f = StopFilter(["</s>"])
    assert f.feed("a </") == "a " and f.finish() == "</" and f.text == "a </"


def test_of_several_stops_the_longest_start_of_any_is_held_back():
    f = StopFilter(["b?", "xab!"])
    assert f.feed("zxab") == "z"  # "xab" may become "xab!"
    assert f.feed("c") == "xabc"
    f = StopFilter(["b?", "a?"])
    assert f.feed("ab") == "a"  # only "b" may start a stop: "a" is followed by "b"


def test_the_earliest_stop_wins():
    f = StopFilter(["END", "\n"])
    assert f.feed("one\ntwo END") == "one" and f.stopped


def test_half_a_utf8_character_waits_for_the_rest():
    """A decoder gives U+FFFD for a character whose last bytes are in the next token."""
    f = StopFilter()
    assert f.update("caf\ufffd") == "caf"
    assert f.update("café \U0001F600"[:5] + "\ufffd\ufffd") == "é "
    assert f.update("café \U0001F600") == "\U0001F600"
    g = StopFilter()
    assert g.update("x\ufffd") == "x" and g.update("x\ufffd", final=True) == "\ufffd"  # the end: as it is


def test_the_whole_text_decoded_again_may_change_only_where_unshown():
    f = StopFilter(["\nHuman:"])
    assert f.update("Sure.\nHum") == "Sure."
    assert f.update("Sure.\nHuman") == "" and f.update("Sure.\nHuman:") == "" and f.stopped
    assert f.text == "Sure."


def test_healing_hides_its_text_and_then_filters_like_the_decoder():
    h = Healing("\n", ["\n\n"])
    assert h.take("\n") == "" and h.take("    return x\n") == "    return x"
    assert h.take("\n") == "" and h.stopped and h.text == "    return x"
    h = Healing("", ["\n\n"])
    assert h.take("a\ufffd") == "a" and h.take("b") == "\ufffdb"  # (a piece is never completed later)
