"""Fitting requests into the context window: what is cut, in which order, and reported."""

from __future__ import annotations

import pytest

from model.prompt.budget import BudgetError, fit
from model.prompt.chat_format import chat_format_for


@pytest.fixture(scope="module")
def fmt(tokenizer):
    return chat_format_for(tokenizer)


def turns(n: int) -> list[dict]:
    out = []
    for i in range(n):
        out += [{"role": "user", "content": f"question {i} " + "words " * 40},
                {"role": "assistant", "content": f"answer {i} " + "more " * 40}]
    return out


def test_fits_untouched(fmt):
    parts = [{"kind": "text", "text": "Explain this."}]
    f = fit(fmt, 1000, system="S", history=turns(1), user_parts=parts)
    assert f.truncated == []
    assert f.messages[-1] == {"role": "user", "content": "Explain this."}
    assert len(f.prompt_ids) == fmt.count(f.messages)


def test_oldest_turns_go_first_and_newest_stays(fmt):
    history = turns(6) + [{"role": "user", "content": "the newest question"}]
    full = fmt.count([{"role": "system", "content": "S"}] + history)
    f = fit(fmt, full // 2, system="S", history=history)
    assert len(f.prompt_ids) <= full // 2
    assert f.messages[-1]["content"] == "the newest question"
    assert f.messages[0] == {"role": "system", "content": "S"}
    assert "question 0 " not in " ".join(m["content"] for m in f.messages)
    assert "answer 5" in " ".join(m["content"] for m in f.messages)
    assert f.truncated and "earlier message" in f.truncated[0]


def test_surrounding_lines_go_before_the_selection(fmt):
    before = "".join(f"before_{i} = {i}\n" for i in range(200))
    after = "".join(f"after_{i} = {i}\n" for i in range(200))
    selection = "".join(f"selected_{i} = {i}\n" for i in range(20))
    parts = [
        {"kind": "text", "text": "Context:\n"},
        {"kind": "surrounding", "text": before},
        {"kind": "selection", "text": selection},
        {"kind": "surrounding", "text": after},
        {"kind": "text", "text": "Explain the selection."},
    ]
    f = fit(fmt, 700, system="S", history=turns(2), user_parts=parts)
    text = f.messages[-1]["content"]
    assert len(f.prompt_ids) <= 700
    assert selection in text  # selection untouched
    assert "question 0" not in str(f.messages)  # history went first
    assert "before_199 = 199" in text and "before_0 = 0\n" not in text  # nearest lines kept
    assert any("surrounding lines" in t for t in f.truncated)
    assert text.endswith("Explain the selection.")


def test_selection_is_cut_in_the_middle_last(fmt):
    selection = "".join(f"line_{i} = {i}\n" for i in range(400))
    parts = [{"kind": "selection", "text": selection}, {"kind": "text", "text": "Explain."}]
    f = fit(fmt, 500, user_parts=parts)
    text = f.messages[-1]["content"]
    assert len(f.prompt_ids) <= 500
    assert text.startswith("line_0 = 0\n") and "line_399 = 399\n" in text
    assert "line_200 = 200\n" not in text and "lines omitted" in text
    assert any("middle of the selection" in t for t in f.truncated)


def test_impossible_fit_is_a_clear_error(fmt):
    with pytest.raises(BudgetError, match="context window"):
        fit(fmt, 10, system="a long system prompt " * 20, user_parts=[{"kind": "text", "text": "hi"}])
