"""The evaluation commands' parts with the real embedded model (in-process, tiny budgets)."""

import json

import pytest

from training.evaluation.backends import EngineBackend
from training.evaluation.generate import generate_answers
from training.evaluation.humaneval import run_humaneval
from training.evaluation.judge import judge_pairs, summarize
from training.evaluation.prompts import EvalInputError, load_prompts


@pytest.fixture(scope="module")
def backend():
    return EngineBackend("default")


def test_generate_records_settings_and_resumes(backend, tmp_path):
    out = tmp_path / "answers.jsonl"
    prompts = load_prompts(limit=2)
    params = {"max_new_tokens": 4}
    first = generate_answers(backend, prompts[:1], out, params, progress=False)
    assert [row["id"] for row in first] == ["code-001"]
    row = first[0]
    assert row["settings"] == {"model": "default", "chat_format": "template",
                               "params": {"max_new_tokens": 4, "temperature": 0.0}}
    assert row["answer"].strip() and row["usage"]["tokens"] <= 4
    # Simulated crash mid-write: half a line at the end is dropped and that prompt redone.
    before = out.read_text()
    out.write_text(before + '{"id": "code-002", "answ')
    rows = generate_answers(backend, prompts, out, params, progress=False)
    lines = out.read_text().splitlines()
    assert [r["id"] for r in rows] == ["code-001", "code-002"]
    assert len(lines) == 2 and lines[0] == before.strip()  # the first was not redone
    with pytest.raises(EvalInputError, match="other settings"):
        generate_answers(backend, prompts, out, {"max_new_tokens": 5}, progress=False)


def test_humaneval_generates_executes_and_records(backend, tmp_path):
    out = tmp_path / "results.jsonl"
    rows = run_humaneval(backend, out, limit=1, max_new_tokens=12, progress=False)
    assert len(rows) == 1
    row = rows[0]
    assert row["task_id"] == "HumanEval/0" and row["status"] in {"passed", "failed", "no_code", "timeout"}
    assert row["passed"] == (row["status"] == "passed") and 0 < row["tokens"] <= 12
    assert json.loads(out.read_text())["reply"] == row["reply"]


def test_local_judge_with_too_few_tokens_counts_unparseable_verdicts(backend, tmp_path):
    a = {"id": "p", "category": "code", "task": "code", "prompt": "Reverse a string in Python.",
         "answer": "```python\ndef rev(s):\n    return s[::-1]\n```"}
    b = dict(a, answer="I don't know.")
    rows = judge_pairs(backend, [(a, b)], tmp_path / "j.jsonl", params={"max_new_tokens": 1}, progress=False)
    assert [r["order"] for r in rows] == ["ab", "ba"]
    summary = summarize(rows)
    # One token cannot hold two scores: both verdicts are counted as unparseable, no crash.
    assert summary["unparseable"] == 2 and summary["judged"] == 0


def test_primed_local_judge_reads_one_score_at_a_time(backend, tmp_path):
    a = {"id": "p", "category": "code", "task": "code", "prompt": "Reverse a string in Python.",
         "answer": "```python\ndef rev(s):\n    return s[::-1]\n```"}
    b = dict(a, answer="I don't know.")
    rows = judge_pairs(backend, [(a, b)], tmp_path / "j.jsonl", primed=True, progress=False)
    assert [r["settings"]["mode"] for r in rows] == ["primed", "primed"]
    for row in rows:
        first, second = row["judge_text"].split("\n")
        assert first.startswith("Score of Assistant 1: ") and second.startswith("Score of Assistant 2: ")
        # Whatever the small model wrote is either two scores 1-10 or counted as unparseable.
        assert ("score_a" in row) != ("unparseable" in row)
        if "score_a" in row:
            assert 1 <= row["score_a"] <= 10 and 1 <= row["score_b"] <= 10


def test_humaneval_raw_completion_and_sampling(backend, tmp_path):
    rows = run_humaneval(backend, tmp_path / "raw.jsonl", limit=1, raw=True, max_new_tokens=16, progress=False)
    assert rows[0]["settings"]["chat_format"] == "raw"
    assert rows[0]["status"] in {"passed", "failed", "timeout"}  # raw code always runs
    sampled = run_humaneval(backend, tmp_path / "k.jsonl", limit=1, samples=2, max_new_tokens=6, progress=False)
    assert [r["sample"] for r in sampled] == [0, 1]
    assert sampled[0]["settings"]["params"]["temperature"] == 0.8
