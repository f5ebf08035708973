"""Parsing judge output, including the malformed output real judges write."""

import pytest

from training.evaluation.verdict import (
    UnparseableVerdict,
    first_line_done,
    judge_messages,
    parse_verdict,
)


@pytest.mark.parametrize(
    ("text", "scores"),
    [
        ("8 6\nAssistant 1 is correct.", (8, 6)),
        ("8, 6", (8, 6)),
        ("  \n7.5 9\n", (7.5, 9)),
        ("Scores: 8/10 6/10\nreasons", (8, 6)),
        ("**3 10**\nThe second is perfect.", (3, 10)),
        ("Assistant 1: 8/10\nAssistant 2: 3/10\nThe first is better.", (8, 3)),
        ("Overall, Assistant 1 receives a score of 7 and Assistant 2 a score of 5.", (7, 5)),
    ],
)
def test_well_formed_and_tolerable_verdicts(text, scores):
    verdict = parse_verdict(text)
    assert (verdict.score_1, verdict.score_2) == scores


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n ",
        "8",  # one score
        "8 6 7",  # three scores: which two?
        "11 4",  # out of range
        "0 5",
        "eight six",
        "Both answers are good.",
        "Assistant 1 and 2 both did well.",
        "Assistant 1: 12\nAssistant 2: 4",
        '{"assistant_1": ',  # truncated JSON
    ],
)
def test_malformed_verdicts_raise_a_clear_error_not_a_crash(text):
    with pytest.raises(UnparseableVerdict) as info:
        parse_verdict(text)
    assert str(info.value)


def test_judge_prompt_holds_both_answers_in_order_and_the_format_rule():
    messages = judge_messages("Reverse a string.", "return s[::-1]", "no idea", task="code")
    user = messages[-1]["content"]
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    assert user.index("return s[::-1]") < user.index("no idea")
    assert "Assistant 1" in user and "1 to 10" in user
    feedback = judge_messages("Review this.", "a", "b", task="feedback")[-1]["content"]
    assert "bug" in feedback
    assert "(no answer)" in judge_messages("q", "", "b")[-1]["content"]


def test_judge_generation_stops_after_scores_and_some_reasons():
    assert not first_line_done("8 6")
    assert not first_line_done("8 6\nshort")
    assert first_line_done("8 6\n" + "reason " * 40)
    assert first_line_done("blah " * 150 + "\nmore")  # rambling without scores: give up
