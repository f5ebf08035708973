"""How often answers loop, with and without repetition control, as one JSON object on stdout.

Runs the 103 prompts of ``training/data/code_eval_prompts.jsonl`` through llama.cpp on the
embedded model (greedy, the product's system prompt, ``--max-new-tokens`` each) once per
sampler setting, and counts the answers in which one sentence or line (at least
``MIN_CHARS`` characters, whitespace collapsed) occurs three or more times. The setting
the worker uses by default (``model.runtime.llamacpp_engine.DEFAULT_DRY``) must at least halve the
share of looping answers against no repetition control.

Usage: python benchmarks/bench_loops.py [--limit N] [--max-new-tokens N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = ROOT / "training" / "data" / "code_eval_prompts.jsonl"
MIN_CHARS = 20
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def repeated_units(text: str) -> list[str]:
    """Sentences or lines of ``text`` that occur three or more times."""
    units: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if len(line) < MIN_CHARS:
            continue
        pieces = [p for p in _SENTENCE_END.split(line) if len(p) >= MIN_CHARS]
        units += pieces if len(pieces) > 1 else [line]
    return [u for u, n in Counter(units).items() if n >= 3]


SETTINGS = {"before": {"dry_multiplier": 0.0}}


def answer(engine, row: dict, max_new_tokens: int, dry: dict) -> str:
    """The greedy answer to one prompt under one DRY setting (requests carry their own)."""
    from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT
    from model.prompt.params import GenerationParams

    ids = engine.chat_format.encode([{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                                     {"role": "user", "content": row["prompt"]}])
    body = engine.request_body(ids, GenerationParams(max_new_tokens=max_new_tokens))
    body = {k: v for k, v in body.items() if not k.startswith("dry_")}
    body.update(dry)
    if dry.get("dry_multiplier"):
        body.setdefault("dry_penalty_last_n", engine.context_window)
    parts: list[str] = []

    def on_chunk(chunk: dict) -> bool:
        parts.extend(c.get("text") or "" for c in chunk.get("choices") or ())
        return False

    engine.server.handle_completions(body, on_chunk)
    return "".join(parts)


def measure(engine, prompts: list[dict], max_new_tokens: int, settings: dict) -> dict:
    """Both settings on each prompt in turn, so a run cut short still compares like with like."""
    looping: dict[str, list[str]] = {name: [] for name in settings}
    chars: dict[str, int] = dict.fromkeys(settings, 0)
    done: list[str] = []
    t = time.perf_counter()

    def one(row: dict) -> None:
        for name, dry in settings.items():
            text = answer(engine, row, max_new_tokens, dry)
            chars[name] += len(text)
            if repeated_units(text):
                looping[name].append(row["id"])
        done.append(row["id"])
        counts = ", ".join(f"{n} {len(v)}" for n, v in looping.items())
        print(f"[{len(done)}/{len(prompts)}] {time.perf_counter() - t:.0f} s looping: {counts}",
              file=sys.stderr, flush=True)

    with ThreadPoolExecutor(max_workers=4) as pool:  # the engine's four slots
        list(pool.map(one, prompts))
    n = max(1, len(done))
    return {name: {"dry": settings[name], "answers": len(done), "looping": len(ids),
                   "loop_share": round(len(ids) / n, 3), "looping_ids": sorted(ids),
                   "mean_chars": round(chars[name] / n)}
            for name, ids in looping.items()} | {"seconds": round(time.perf_counter() - t, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N prompts")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()

    from model.runtime import llamacpp_engine
    from model.runtime.loading import default_gguf_path

    prompts = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
    if args.limit:
        prompts = prompts[: args.limit]
    engine = llamacpp_engine.load(default_gguf_path(), "SmolLM2-135M-Instruct", slots=4)
    settings = {**SETTINGS, "after": dict(llamacpp_engine.DEFAULT_DRY)}
    figures = measure(engine, prompts, args.max_new_tokens, settings)
    before, after = figures["before"], figures["after"]
    result = {
        "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "min_chars": MIN_CHARS,
        "threads": llamacpp_engine.default_threads(), **figures,
        "halved": after["loop_share"] <= before["loop_share"] / 2,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
