"""`starchat eval generate`: answer every prompt once, resumably, recording the settings."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from .prompts import EvalInputError, read_jsonl

log = logging.getLogger(__name__)

DEFAULT_PARAMS = {"max_new_tokens": 256, "temperature": 0.0}


def settings_of(backend, params: dict) -> dict:
    """What makes two runs comparable: model spec, chat format and generation params."""
    return {"model": backend.spec, "chat_format": backend.chat_mode, "params": dict(params)}


def load_done(out: Path, settings: dict) -> dict[str, dict]:
    """Answers already in `out`, by prompt id; refuses a file made with other settings."""
    if not out.exists():
        return {}
    text = out.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        # A run killed mid-write leaves half a line; drop it so the rerun redoes that prompt.
        text = text[: text.rfind("\n") + 1]
        out.write_text(text, encoding="utf-8")
    done = {}
    for row in read_jsonl(out, what="answers file"):
        if row.get("settings") != settings:
            raise EvalInputError(
                f"{out} holds answers made with other settings ({row.get('settings')}); "
                "use another --out or delete it."
            )
        done[row["id"]] = row
    return done


def generate_answers(backend, prompts: list[dict], out: str | Path, params: dict | None = None,
                     *, system: str | None = None, progress: bool = True) -> list[dict]:
    """Answer the prompts not yet in `out`, appending one JSON line per answer; returns all."""
    out = Path(out)
    params = {**DEFAULT_PARAMS, **(params or {})}
    settings = settings_of(backend, params)
    done = load_done(out, settings)
    todo = [p for p in prompts if p["id"] not in done]
    if done:
        log.info("resuming: %d of %d prompts already answered in %s", len(prompts) - len(todo), len(prompts), out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="generate",
               unit="prompt", file=sys.stderr, disable=not progress)
    with out.open("a", encoding="utf-8") as handle:
        for prompt in todo:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt["prompt"]}
            ]
            completion = backend.complete(messages, params)
            row = {
                "id": prompt["id"], "category": prompt["category"], "task": prompt["task"],
                "language": prompt["language"], "prompt": prompt["prompt"],
                "answer": completion.text, "finish_reason": completion.finish_reason,
                "usage": completion.usage, "settings": settings,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()  # each answer is durable before the next starts: resumable
            done[prompt["id"]] = row
            bar.update(1)
    bar.close()
    return [done[p["id"]] for p in prompts if p["id"] in done]
