"""The evaluation commands' parts with the real embedded model (in-process, tiny budgets)."""

import json

import pytest

from training.evaluation.backends import EngineBackend
from training.evaluation.generate import generate_answers
from training.evaluation.humaneval import (
    MEMORY_MB,
    TIMEOUT_S,
    build_program,
    load_problems,
    run_humaneval,
)
from training.evaluation.judge import judge_pairs, summarize
from training.evaluation.prompts import EvalInputError, load_prompts
from training.evaluation.sandbox import run_python
from training.evaluation.verdict import UnparseableVerdict, parse_verdict


def expected_status(row: dict, *, raw: bool) -> str:
    """The status the recorded reply must have: its program built and run again, here."""
    (problem,) = [p for p in load_problems() if p["task_id"] == row["task_id"]]
    program = build_program(problem, row["reply"], raw=raw)
    if program is None:
        return "no_code"
    return run_python(program, timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB).status


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
    assert row["task_id"] == "HumanEval/0"
    # Whatever the small model wrote, the recorded status is what its reply really does.
    assert row["status"] == expected_status(row, raw=False)
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
        # Whatever the small model wrote: two scores exactly when the text holds two, given
        # back to the answers they belong to; otherwise counted as unparseable.
        assert ("score_a" in row) != ("unparseable" in row)
        try:
            verdict = parse_verdict(row["judge_text"])
        except UnparseableVerdict:
            assert "unparseable" in row
        else:
            first_second = (verdict.score_1, verdict.score_2)
            assert (row["score_a"], row["score_b"]) == (
                first_second if row["order"] == "ab" else first_second[::-1])


def test_humaneval_raw_completion_and_sampling(backend, tmp_path):
    rows = run_humaneval(backend, tmp_path / "raw.jsonl", limit=1, raw=True, max_new_tokens=16, progress=False)
    assert rows[0]["settings"]["chat_format"] == "raw"
    assert rows[0]["status"] != "no_code"  # raw code always runs
    assert rows[0]["status"] == expected_status(rows[0], raw=True)
    sampled = run_humaneval(backend, tmp_path / "k.jsonl", limit=1, samples=2, max_new_tokens=6, progress=False)
    assert [r["sample"] for r in sampled] == [0, 1]
    assert sampled[0]["settings"]["params"]["temperature"] == 0.8
