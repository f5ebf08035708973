"""Data pipeline speed and packing efficiency -> JSON on stdout.

Tokenize + label + pack the bundled dialogues (repeated) with the embedded model's tokenizer
in the StarChat format; compare the rows' fill with plain right padding.
    python benchmarks/bench_data.py [--repeat 4] [--max-seq-length 256 1024] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.runtime.loading import load_tokenizer  # noqa: E402
from training.data import load_dialogues  # noqa: E402
from training.packing import pack_examples, packing_efficiency  # noqa: E402
from training.tokenize import add_chat_tokens, tokenize_dialogues  # noqa: E402


def padding_efficiency(examples: list[dict], batch_size: int) -> float:
    """Real tokens / padded capacity when each batch is padded to its longest dialogue."""
    real = capacity = 0
    for i in range(0, len(examples), batch_size):
        batch = [len(e["input_ids"]) for e in examples[i:i + batch_size]]
        real += sum(batch)
        capacity += max(batch) * len(batch)
    return real / capacity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(ROOT / "training/data/code_assistant.jsonl"))
    parser.add_argument("--repeat", type=int, default=4, help="repeat the data set this many times")
    parser.add_argument("--max-seq-length", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    tokenizer = add_chat_tokens(load_tokenizer("default"), force_template=True)
    dialogues = load_dialogues(args.dataset) * args.repeat
    results = []
    for max_len in args.max_seq_length:
        start = time.perf_counter()
        examples = tokenize_dialogues(tokenizer, dialogues, max_len)
        tokenized = time.perf_counter()
        rows = pack_examples(examples, max_len)
        packed = time.perf_counter()
        tokens = sum(len(e["input_ids"]) for e in examples)
        labelled = sum(sum(label != -100 for label in e["labels"]) for e in examples)
        results.append({
            "max_seq_length": max_len,
            "dialogues": len(dialogues),
            "examples": len(examples),
            "tokens": tokens,
            "labelled_fraction": round(labelled / tokens, 4),
            "tokenize_label_tokens_per_s": round(tokens / (tokenized - start)),
            "pack_tokens_per_s": round(tokens / max(packed - tokenized, 1e-9)),
            "end_to_end_tokens_per_s": round(tokens / (packed - start)),
            "packed_rows": len(rows),
            "packing_efficiency": round(packing_efficiency(rows, max_len), 4),
            "padding_efficiency_batch": round(padding_efficiency(examples, args.batch_size), 4),
            "padding_efficiency_to_max_len": round(tokens / (len(examples) * max_len), 4),
            "rows_saved_vs_padding": round(1 - len(rows) / len(examples), 4),
        })
    print(json.dumps({"benchmark": "bench_data", "batch_size": args.batch_size, "results": results}, indent=2))


if __name__ == "__main__":
    main()
