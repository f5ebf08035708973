"""The pairwise judge prompt (Vicuna style) and parsing of whatever the judge wrote back."""

from __future__ import annotations

import re
from dataclasses import dataclass

JUDGE_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."

PAIR_TEMPLATE = """[Question]
{question}

[The Start of Assistant 1's Answer]
{answer_1}
[The End of Assistant 1's Answer]

[The Start of Assistant 2's Answer]
{answer_2}
[The End of Assistant 2's Answer]

[System]
{instruction}
"""

FORMAT_RULE = (
    "Output a single first line containing only two scores on a scale of 1 to 10 "
    "(1: no answer or nonsense; 10: perfect) for Assistant 1 and Assistant 2, separated by "
    "a space. From the next line on, give your reasons, avoiding any bias and making sure "
    "the order in which the answers were presented does not affect your judgment."
)

INSTRUCTIONS = {
    "code": (
        "Evaluate the coding abilities of the two assistants above. They were asked to write "
        "code for the question. Check that the code correctly does what was asked, is accurate "
        "and efficient, is readable, and follows good practice for its language. "
    ) + FORMAT_RULE,
    "feedback": (
        "Evaluate the two assistants' reviews of the code in the question. A good answer finds "
        "the real bug or bugs, explains them correctly and shows a working fix; inventing "
        "problems that are not there is a fault. "
    ) + FORMAT_RULE,
}

NUMBER = r"(\d+(?:\.\d+)?)"
# "Assistant 1: 8/10", "Assistant 1 receives a score of 8", "**Assistant 1** - 8"
NAMED = {
    side: re.compile(rf"assistant\s*{side}\b[^\d\n]{{0,40}}?{NUMBER}(?:\s*/\s*10)?", re.IGNORECASE)
    for side in (1, 2)
}


@dataclass
class Verdict:
    score_1: float
    score_2: float
    reasons: str


class UnparseableVerdict(ValueError):
    """The judge's text holds no usable pair of scores; the message says why."""


def judge_messages(question: str, answer_1: str, answer_2: str, task: str = "code") -> list[dict]:
    """The chat messages asking the judge to score Assistant 1 and Assistant 2."""
    instruction = INSTRUCTIONS.get(task, INSTRUCTIONS["code"])
    content = PAIR_TEMPLATE.format(
        question=question.strip(), answer_1=answer_1.strip() or "(no answer)",
        answer_2=answer_2.strip() or "(no answer)", instruction=instruction,
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]


def _check(scores: list[float], where: str) -> tuple[float, float]:
    first, second = scores
    for score in scores:
        if not 1 <= score <= 10:
            raise UnparseableVerdict(f"score {score:g} in {where} is outside 1-10")
    return first, second


def parse_verdict(text: str) -> Verdict:
    """Two scores from a judge reply; raises UnparseableVerdict on anything ambiguous.

    Accepted: the Vicuna first line ("8 6", "8, 6", "Scores: 8/10 6/10", "**8 6**"), else
    one "Assistant 1 ... N" and one "Assistant 2 ... M" mention anywhere in the text.
    """
    if not text or not text.strip():
        raise UnparseableVerdict("the judge wrote nothing")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = re.sub(r"[*#`_]|\bscores?\b\s*:?", " ", lines[0], flags=re.IGNORECASE)
    first = re.sub(r"(\d)\s*/\s*10\b", r"\1", first)
    if not re.search(r"assistant", first, re.IGNORECASE):
        numbers = re.findall(r"-?\d+(?:\.\d+)?", first)
        rest = re.sub(r"-?\d+(?:\.\d+)?|[\s,;:|/()\[\]-]|and|vs\.?", "", first, flags=re.IGNORECASE)
        if len(numbers) == 2 and not rest:
            one, two = _check([float(n) for n in numbers], "the first line")
            return Verdict(one, two, "\n".join(lines[1:]).strip())
    found = {side: pattern.findall(text) for side, pattern in NAMED.items()}
    if len(found[1]) >= 1 and len(found[2]) >= 1:
        one, two = _check([float(found[1][0]), float(found[2][0])], "the named scores")
        return Verdict(one, two, text.strip())
    raise UnparseableVerdict(f"no pair of scores in {lines[0][:80]!r}")


def first_line_done(text: str) -> bool:
    """Stop rule for judge generation: a parseable first line plus a sentence of reasons."""
    if "\n" not in text.strip():
        return False
    try:
        parse_verdict(text)
    except UnparseableVerdict:
        return len(text) > 600  # rambling without scores; more text rarely brings them
    return len(text.split("\n", 1)[1]) > 240
