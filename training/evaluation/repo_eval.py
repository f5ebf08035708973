"""How well a model completes the user's own code: ``starchat eval repo REPO --model SPEC``.

Scored on the repository's *held-out* files (``training.repo.walk.split``, the same seed as
``starchat adapt``), so a model adapted on the rest has never seen them. Positions are the
starts of non-blank lines (more than three characters), drawn with a seeded generator and
sorted by file and line: the same positions for every model, whatever it is.

Each position is asked of the model the way the editor asks (a ``fim`` request to the
model worker with the file's path, the text before the line and, for fill-in-the-middle,
the text after it; ``context_tokens`` as the editor's default), and the answer goes through
the editor's own post-processing (``model.prompt.completion_text.postprocess``). Scores:

- ``exact_match``: the first line shown equals the real line (trailing spaces aside);
- ``edit_similarity``: 1 - Levenshtein distance / the longer length, averaged;
- ``fim_exact_match`` / ``fim_edit_similarity`` (models with FIM tokens only): the same with
  the rest of the file given as the suffix (single-line fill-in-the-middle); ``None`` for
  prefix-only models, for which it would repeat the first score.

The worker runs the spec on its engine (llama.cpp for GGUF files and ``BASE+ADAPTER``
specs), so the score is what the editor gets. Scores repeat exactly from a fresh worker; a
warm one reuses cached prompt chunks (shifted), which can move a near tie, so two scores of
one model may differ in the last decimal.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from model.prompt.completion_text import Cursor, postprocess
from model.prompt.fim import DEFAULT_CONTEXT_TOKENS

from ..repo.walk import RepoFile

POSITIONS = 300
MIN_LINE_CHARS = 4
MIN_POSITIONS = 20
MAX_NEW_TOKENS = 48


class TooFewPositions(ValueError):
    """The held-out files have too few lines to score; the message is one sentence."""


@dataclass(frozen=True)
class Position:
    path: str
    line: int  # 0-based
    prefix: str
    suffix: str
    real: str


def positions(files: Sequence[RepoFile], n: int = POSITIONS, seed: int = 0) -> list[Position]:
    """``n`` line starts of ``files`` (all of them when fewer), seeded, sorted by file and line."""
    candidates = []
    for file in sorted(files, key=lambda f: f.path):
        lines = file.text.split("\n")
        candidates += [(file, i) for i, line in enumerate(lines) if i and len(line.strip()) >= MIN_LINE_CHARS]
    if len(candidates) < min(n, MIN_POSITIONS):
        raise TooFewPositions(f"The held-out files have {len(candidates)} lines to score; at least "
                              f"{min(n, MIN_POSITIONS)} are needed (add files or lower --positions).")
    chosen = sorted(random.Random(seed).sample(range(len(candidates)), min(n, len(candidates))))
    out = []
    for k in chosen:
        file, i = candidates[k]
        lines = file.text.split("\n")
        out.append(Position(file.path, i, "\n".join(lines[:i]) + "\n", "\n".join(lines[i + 1 :]), lines[i]))
    return out


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def similarity(a: str, b: str) -> float:
    """1 - edit distance / the longer length (1.0 for two empty strings)."""
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest


def first_line_shown(raw: str, suffix: str) -> str:
    """What the editor would show of ``raw`` at a line start, first line only."""
    shown = postprocess(raw, Cursor("", "", tuple(suffix.split("\n")[:5]))) or ""
    return shown.split("\n", 1)[0]


def fim_request(pos: Position, with_suffix: bool, context_tokens: int = DEFAULT_CONTEXT_TOKENS,
                max_new_tokens: int = MAX_NEW_TOKENS, adapter_scale: float | None = None) -> dict:
    """The worker request the editor would send at ``pos`` (the text cut as the server cuts
    it), stopped at the first newline: only the first line is scored, and the first line
    shown depends on nothing after it (at a line start, post-processing keeps the first
    line as it is and only cuts later ones), so the score is the same as for the whole
    answer at a fraction of the tokens. ``adapter_scale``: how much of a run-time adapter
    the request applies, as the editor's ``starchat.completion.adapterScale`` sets it (None:
    not sent, so the worker applies the completion scale the adapter carries)."""
    params: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": 0.0, "stop": ["\n"]}
    if adapter_scale is not None:
        params["adapter_scale"] = adapter_scale
    return {"fim": {"prefix": pos.prefix[-context_tokens * 8 :],
                    "suffix": pos.suffix[: context_tokens * 8] if with_suffix else "",
                    "path": pos.path, "context_tokens": context_tokens},
            "params": params}


def complete(client: Any, request: dict) -> str:
    """The model's raw text for one request through a worker client."""
    text = []
    for event in client.generate(request):
        if event["type"] == "delta":
            text.append(event["text"])
        elif event["type"] == "error":
            raise RuntimeError(event["message"])
    return "".join(text)


def score(client: Any, points: Sequence[Position], *, fim: bool = False,
          context_tokens: int = DEFAULT_CONTEXT_TOKENS, adapter_scale: float | None = None,
          progress: Callable[[int, int], None] | None = None) -> dict:
    """Exact match and edit similarity over ``points`` (``fim``: also with the suffix;
    ``adapter_scale``: see ``fim_request``)."""
    started = time.perf_counter()
    modes = [("", False)] + ([("fim_", True)] if fim else [])
    hits = {m: 0 for m, _ in modes}
    sims: dict[str, list[float]] = {m: [] for m, _ in modes}
    for k, pos in enumerate(points):
        for mode, with_suffix in modes:
            guess = first_line_shown(complete(client, fim_request(pos, with_suffix, context_tokens,
                                                               adapter_scale=adapter_scale)), pos.suffix)
            hits[mode] += guess.rstrip() == pos.real.rstrip()
            sims[mode].append(similarity(guess.rstrip(), pos.real.rstrip()))
        if progress is not None:
            progress(k + 1, len(points))
    n = len(points)
    result: dict[str, Any] = {"positions": n, "context_tokens": context_tokens}
    for mode in ("", "fim_"):
        result[f"{mode}exact_match"] = round(hits[mode] / n, 4) if mode in hits else None
        result[f"{mode}edit_similarity"] = round(statistics.mean(sims[mode]), 4) if mode in sims else None
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result
