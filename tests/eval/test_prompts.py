"""The bundled prompt set and its loader."""

import json
from collections import Counter

import pytest

from training.evaluation.prompts import DEFAULT_PROMPTS, EvalInputError, load_prompts


def test_bundled_prompt_set_has_the_promised_shape():
    rows = load_prompts(DEFAULT_PROMPTS)
    assert len(rows) >= 100
    tasks = Counter(row["task"] for row in rows)
    assert 0.65 <= tasks["code"] / len(rows) <= 0.85  # about three quarters ask for code
    assert 0.15 <= tasks["feedback"] / len(rows) <= 0.35  # about one quarter review buggy code
    languages = Counter(row["language"] for row in rows)
    assert languages.most_common(1)[0][0] == "python" and len(languages) >= 5
    plots = [row for row in rows if row["category"] == "plot"]
    assert len(plots) >= 10
    assert all("matplotlib" in row["prompt"] or "seaborn" in row["prompt"] for row in plots)
    assert all("```" in row["prompt"] for row in rows if row["task"] == "feedback")


def test_subsets_keep_categories_spread():
    subset = load_prompts(every=7)
    assert {row["category"] for row in subset} >= {"plot", "feedback"}
    assert len(load_prompts(limit=3)) == 3
    assert {row["category"] for row in load_prompts(category="plot")} == {"plot"}


def _write(tmp_path, lines):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "a", "category": "x", "task": "code", "language": "python"'], "not valid JSON"),
        (['["a list"]'], "not a JSON object"),
        (['{"id": "a", "category": "x", "task": "code", "language": "python"}'], "lacks prompt"),
        (['{"id": "a", "category": "x", "task": "poem", "language": "en", "prompt": "p"}'], "task 'poem'"),
        ([json.dumps({"id": "a", "category": "x", "task": "code", "language": "py", "prompt": "p"})] * 2, "twice"),
    ],
)
def test_bad_prompt_files_give_one_sentence(tmp_path, lines, message):
    with pytest.raises(EvalInputError, match=message):
        load_prompts(_write(tmp_path, lines))


def test_missing_file_and_empty_selection(tmp_path):
    with pytest.raises(EvalInputError, match="does not exist"):
        load_prompts(tmp_path / "nope.jsonl")
    with pytest.raises(EvalInputError, match="No prompts selected"):
        load_prompts(category="no-such-category")
