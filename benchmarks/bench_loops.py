"""How often answers loop, with and without repetition control, as one JSON object on stdout.

Runs the 103 prompts of ``training/data/code_eval_prompts.jsonl`` through llama.cpp on the
embedded model (greedy, the product's system prompt, ``--max-new-tokens`` each) once per
sampler setting, and counts the answers in which one sentence or line (at least
``MIN_CHARS`` characters, whitespace collapsed) occurs three or more times. The setting
the worker uses by default (``model.llamacpp_engine.DEFAULT_DRY``) must at least halve the
share of looping answers against no repetition control.

Usage: python benchmarks/bench_loops.py [--limit N] [--max-new-tokens N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
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


def run_setting(engine, prompts: list[dict], max_new_tokens: int, dry: dict,
                repeat_penalty: float = 1.0) -> dict:
    from model.chat_format import DEFAULT_SYSTEM_PROMPT
    from model.params import GenerationParams

    engine.dry = dict(dry)
    if dry.get("dry_multiplier"):
        engine.dry.setdefault("dry_penalty_last_n", engine.context_window)
    params = GenerationParams(max_new_tokens=max_new_tokens, repetition_penalty=repeat_penalty)

    def answer(row: dict) -> str:
        ids = engine.chat_format.encode([{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                                         {"role": "user", "content": row["prompt"]}])
        parts: list[str] = []
        engine.run(ids, params, threading.Event(), parts.append)
        return "".join(parts)

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:  # the engine's four slots
        answers = list(pool.map(answer, prompts))
    looping = [row["id"] for row, text in zip(prompts, answers, strict=True) if repeated_units(text)]
    return {
        "dry": dry, "repeat_penalty": repeat_penalty,
        "answers": len(answers), "looping": len(looping),
        "loop_share": round(len(looping) / max(1, len(answers)), 3),
        "looping_ids": looping, "seconds": round(time.perf_counter() - t, 1),
        "mean_chars": round(sum(map(len, answers)) / max(1, len(answers))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N prompts")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    args = parser.parse_args()

    from model import llamacpp_engine
    from model.loading import default_gguf_path

    prompts = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
    if args.limit:
        prompts = prompts[: args.limit]
    engine = llamacpp_engine.load(default_gguf_path(), "SmolLM2-135M-Instruct", slots=4)
    before = run_setting(engine, prompts, args.max_new_tokens, {"dry_multiplier": 0.0})
    after = run_setting(engine, prompts, args.max_new_tokens, llamacpp_engine.DEFAULT_DRY)
    result = {
        "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "min_chars": MIN_CHARS,
        "before": before, "after": after,
        "halved": after["loop_share"] <= before["loop_share"] / 2,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
