"""``starchat eval repo``'s scoring pieces: the positions, the distance, and why a request
may stop at the first newline without changing the score."""

from __future__ import annotations

import pytest

from training.evaluation import repo_eval
from training.evaluation.repo_eval import (
    TooFewPositions,
    fim_request,
    first_line_shown,
    positions,
    similarity,
)
from training.repo.walk import RepoFile

FILES = [RepoFile("b.py", "import os\n\ndef f(x):\n    return x + 1\n\nclass A:\n    pass\n" * 4),
         RepoFile("a.py", "x = 1\ny = 2\n\nprint(x + y)\n" * 5)]


def test_positions_are_seeded_sorted_and_line_starts():
    first, again = positions(FILES, n=20, seed=0), positions(FILES, n=20, seed=0)
    assert first == again and first != positions(FILES, n=20, seed=1)
    assert [(p.path, p.line) for p in first] == sorted((p.path, p.line) for p in first)
    for p in first:
        lines = {f.path: f.text.split("\n") for f in FILES}[p.path]
        assert p.real == lines[p.line] and len(p.real.strip()) >= 4
        assert p.prefix == "\n".join(lines[: p.line]) + "\n" and p.suffix == "\n".join(lines[p.line + 1 :])


def test_too_few_lines_is_one_sentence():
    with pytest.raises(TooFewPositions, match="at least 20 are needed"):
        positions([RepoFile("a.py", "x = 1\ny = 2\n")], n=300)


def test_similarity_is_one_minus_the_normalised_edit_distance():
    assert similarity("", "") == 1.0 and similarity("abc", "abc") == 1.0
    assert similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert similarity("abc", "") == 0.0


@pytest.mark.parametrize("raw", [
    "return x\n    y = 2\n", "return x", "\n    return x\n", "  \nfoo\n", "a\n\nb", "", "\n", "x = [\n  1,\n]\n",
    "print(y)  \nprint(y)", "def g():\n    pass\nclass B:\n",
])
def test_the_first_line_shown_depends_on_nothing_after_the_first_newline(raw):
    suffix = "print(x + y)\nx = 1\n"
    cut = raw.split("\n", 1)[0] + ("\n" if "\n" in raw else "")
    assert first_line_shown(raw, suffix) == first_line_shown(cut, suffix)


def test_a_scored_request_stops_at_the_first_newline():
    pos = positions(FILES, n=20)[3]
    request = fim_request(pos, with_suffix=True, context_tokens=64)
    assert request["params"]["stop"] == ["\n"] and request["params"]["temperature"] == 0.0
    assert request["params"]["max_new_tokens"] == repo_eval.MAX_NEW_TOKENS
    assert request["fim"]["prefix"] == pos.prefix[-64 * 8 :] and request["fim"]["suffix"] == pos.suffix[: 64 * 8]
    assert fim_request(pos, with_suffix=False)["fim"]["suffix"] == ""


def test_a_scored_request_carries_the_adapter_scale_only_when_given():
    pos = positions(FILES, n=20)[3]
    assert "adapter_scale" not in fim_request(pos, with_suffix=False)["params"]
    assert fim_request(pos, with_suffix=False, adapter_scale=1.5)["params"]["adapter_scale"] == 1.5
    from model.prompt.params import GenerationParams

    params, problems = GenerationParams.parse(fim_request(pos, with_suffix=False, adapter_scale=1.5)["params"])
    assert params.adapter_scale == 1.5 and not problems  # the worker takes it as given


@pytest.mark.parametrize("argv,message", [
    (["repo", ".", "--adapter-scale", "5"], "must be a number from 0 (the base model alone) to 4"),
    (["repo", ".", "--adapter-scale", "x"], "is not a number"),
    (["repo", ".", "--adapter-scale", "nan"], "must be a number from 0 (the base model alone) to 4"),
    (["repo", ".", "--adapter-scale", "1"], "--adapter-scale needs a model with an adapter (BASE+DIR)"),
])
def test_eval_repo_adapter_scale_is_checked(argv, message, capsys):
    from training.evaluate import main

    with pytest.raises(SystemExit) as stop:  # argparse's exit, or main's return code
        raise SystemExit(main(argv))
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
