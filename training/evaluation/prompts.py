"""The evaluation prompt set: JSONL rows {id, category, task, language, prompt}."""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent / "data" / "code_eval_prompts.jsonl"
TASKS = ("code", "feedback")
REQUIRED = ("id", "category", "task", "language", "prompt")


class EvalInputError(ValueError):
    """Bad evaluation input (file, row, option); the message is one sentence for the user."""


def read_jsonl(path: str | Path, *, what: str = "file") -> list[dict]:
    """Rows of a JSONL file; a broken line is an EvalInputError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"The {what} {path} does not exist.")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalInputError(f"Line {number} of {path} is not valid JSON ({exc.msg}).") from exc
            if not isinstance(row, dict):
                raise EvalInputError(f"Line {number} of {path} is not a JSON object.")
            rows.append(row)
    return rows


def load_prompts(path: str | Path = DEFAULT_PROMPTS, *, limit: int | None = None,
                 category: str | None = None, every: int = 1) -> list[dict]:
    """Validated prompt rows: of one `category` if given, every `every`-th, the first `limit`."""
    rows = read_jsonl(path, what="prompt file")
    seen: set[str] = set()
    for number, row in enumerate(rows, 1):
        missing = [key for key in REQUIRED if not isinstance(row.get(key), str) or not row[key].strip()]
        if missing:
            raise EvalInputError(f"Prompt {number} of {path} lacks {', '.join(missing)}.")
        if row["task"] not in TASKS:
            raise EvalInputError(f"Prompt {row['id']} has task {row['task']!r}; use code or feedback.")
        if row["id"] in seen:
            raise EvalInputError(f"Prompt id {row['id']} appears twice in {path}.")
        seen.add(row["id"])
    if category:
        rows = [row for row in rows if row["category"] == category]
    rows = rows[::every]  # a spread-out subset keeps every category in a short run
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise EvalInputError(f"No prompts selected from {path}.")
    return rows
