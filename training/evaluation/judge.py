"""`starchat eval judge`: pairwise LLM-as-judge, both orders, with the biases counted."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from .prompts import EvalInputError, read_jsonl
from .verdict import UnparseableVerdict, first_line_done, judge_messages, parse_verdict

log = logging.getLogger(__name__)

JUDGE_PARAMS = {"max_new_tokens": 160, "temperature": 0.0}
ORDERS = ("ab", "ba")  # "ab": answer A is shown as Assistant 1; "ba": B is.
# Primed scoring for small local judges, which echo the instructions instead of following
# them: the reply is started for them, one score at a time (no digits in the primes, so
# nothing but the judge's own number can be read as a score).
PRIME_1 = "Score of Assistant 1: "
PRIME_2 = "Score of Assistant 2: "
PRIMED_PARAMS = {"max_new_tokens": 3, "temperature": 0.0}


def primed_verdict_text(judge, messages: list[dict]) -> str:
    """Ask for the two scores by starting the judge's reply; returns the full reply text."""
    first = judge.complete(messages, PRIMED_PARAMS, prefix=PRIME_1).text.strip().split("\n")[0]
    second = judge.complete(messages, PRIMED_PARAMS, prefix=f"{PRIME_1}{first}\n{PRIME_2}").text
    return f"{PRIME_1}{first}\n{PRIME_2}{second.strip().splitlines()[0] if second.strip() else ''}"


def pair_answers(a_path: str | Path, b_path: str | Path) -> list[tuple[dict, dict]]:
    """Rows of the two answer files matched by prompt id (A's order); ids in one only are skipped."""
    a_rows = read_jsonl(a_path, what="answers file")
    b_rows = {row.get("id"): row for row in read_jsonl(b_path, what="answers file")}
    pairs = [(row, b_rows[row.get("id")]) for row in a_rows if row.get("id") in b_rows]
    if not pairs:
        raise EvalInputError(f"{a_path} and {b_path} share no prompt ids.")
    for a, b in pairs:
        if "answer" not in a or "answer" not in b:
            raise EvalInputError(f"Prompt {a['id']} lacks an 'answer' field in one of the files.")
    return pairs


def judge_pairs(judge, pairs: list[tuple[dict, dict]], out: str | Path, *,
                params: dict | None = None, primed: bool = False, progress: bool = True) -> list[dict]:
    """Judge every pair in both orders, appending verdict rows to `out` (resumable).

    `primed` starts the judge's reply with "Score of Assistant 1: " (local judges only).
    """
    out = Path(out)
    params = PRIMED_PARAMS if primed else (params or JUDGE_PARAMS)
    settings = {"judge": judge.spec, "chat_format": judge.chat_mode, "params": params,
                "mode": "primed" if primed else "free"}
    done: dict[tuple[str, str], dict] = {}
    if out.exists():
        for row in read_jsonl(out, what="judgments file"):
            if row.get("settings") != settings:
                raise EvalInputError(f"{out} holds judgments made with another judge; use another --out.")
            done[(row["id"], row["order"])] = row
    jobs = [(a, b, order) for a, b in pairs for order in ORDERS if (a["id"], order) not in done]
    bar = tqdm(total=2 * len(pairs), initial=2 * len(pairs) - len(jobs), desc="judge",
               unit="verdict", file=sys.stderr, disable=not progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        for a, b, order in jobs:
            first, second = (a, b) if order == "ab" else (b, a)
            messages = judge_messages(a["prompt"], first["answer"], second["answer"], a.get("task", "code"))
            if primed:
                text = primed_verdict_text(judge, messages)
            else:
                text = judge.complete(messages, params, stop_when=first_line_done).text
            row = {"id": a["id"], "category": a.get("category", ""), "task": a.get("task", ""),
                   "order": order, "judge_text": text, "settings": settings}
            try:
                verdict = parse_verdict(text)
                one, two = verdict.score_1, verdict.score_2
                row["score_a"], row["score_b"] = (one, two) if order == "ab" else (two, one)
            except UnparseableVerdict as exc:
                row["unparseable"] = str(exc)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            done[(a["id"], order)] = row
            bar.update(1)
    bar.close()
    return [done[(a["id"], order)] for a, _ in pairs for order in ORDERS if (a["id"], order) in done]


def _outcome(score_a: float, score_b: float) -> str:
    return "win" if score_a > score_b else "loss" if score_a < score_b else "tie"


def summarize(judgments: list[dict]) -> dict:
    """Win/tie/loss of A against B, mean scores, position consistency, unparseable count."""
    by_id: dict[str, list[dict]] = {}
    for row in judgments:
        by_id.setdefault(row["id"], []).append(row)
    counts = {"win": 0, "tie": 0, "loss": 0}
    scores_a, scores_b = [], []
    both, consistent, first_wins, decided = 0, 0, 0, 0
    categories: dict[str, dict] = {}
    for rows in by_id.values():
        parsed = [r for r in rows if "score_a" in r]
        for r in parsed:
            scores_a.append(r["score_a"])
            scores_b.append(r["score_b"])
            outcome = _outcome(r["score_a"], r["score_b"])
            if outcome != "tie":
                decided += 1
                # Assistant 1 is A in order "ab", B in order "ba".
                first_wins += (outcome == "win") == (r["order"] == "ab")
        if len(parsed) == 2:
            both += 1
            consistent += _outcome(parsed[0]["score_a"], parsed[0]["score_b"]) == _outcome(
                parsed[1]["score_a"], parsed[1]["score_b"])
        if not parsed:
            continue
        mean_a = sum(r["score_a"] for r in parsed) / len(parsed)
        mean_b = sum(r["score_b"] for r in parsed) / len(parsed)
        outcome = _outcome(mean_a, mean_b)
        counts[outcome] += 1
        cat = categories.setdefault(rows[0].get("category", ""), {"win": 0, "tie": 0, "loss": 0})
        cat[outcome] += 1
    judged = sum(counts.values())
    return {
        "prompts": len(by_id), "judged": judged, **counts,
        "win_rate": counts["win"] / judged if judged else None,
        "mean_score_a": sum(scores_a) / len(scores_a) if scores_a else None,
        "mean_score_b": sum(scores_b) / len(scores_b) if scores_b else None,
        "verdicts": len(judgments),
        "unparseable": sum(1 for r in judgments if "score_a" not in r),
        "both_orders_parsed": both,
        "position_consistency": consistent / both if both else None,
        "first_position_win_share": first_wins / decided if decided else None,
        "by_category": categories,
    }
