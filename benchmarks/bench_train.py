"""`starchat train` as a user runs it -> JSON on stdout.

Runs the real command (`starchat train CONFIG --output_dir TMP [--max_steps N]`) in a new
process and reports what the README's training row says:

- `wall_s`: spawn -> exit of `starchat train` (imports, model load, data, steps, save);
- `steps`, `step_s` (median of the logged step-to-step times), `train_samples_per_second`;
- `loss_first`, `loss_last` from the run's own `train_log.jsonl`;
- `stops_by_itself`: the saved folder answers "Write a Python function that reverses a
  string." through a model worker and the answer ends on the model's end-of-turn token
  (`finish_reason == "stop"`) before `--answer-tokens`.

The full CPU recipe (`training/configs/smollm2_cpu.yaml`, 24 steps, ~4 min on 2 idle cores):
    python benchmarks/bench_train.py
A quick check of the same path:
    python benchmarks/bench_train.py --max-steps 3
Pass `--lora` to add `--use_lora true` to the recipe. Everything is written to a temp dir
that is removed at the end; the worker started for the answer is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTION = "Write a Python function that reverses a string."


def answer(folder: Path, runtime: Path, max_new_tokens: int) -> dict:
    """Ask the trained folder one question through a real worker, then stop the worker."""
    from model.serving.client import WorkerClient

    os.environ["STARCHAT_RUNTIME_DIR"] = str(runtime)
    text, done = "", {}
    with WorkerClient(str(folder)) as client:
        request = {"messages": [{"role": "user", "content": QUESTION}],
                   "params": {"max_new_tokens": max_new_tokens}}
        for event in client.generate(request):
            if event["type"] == "delta":
                text += event["text"]
            elif event["type"] in ("done", "error"):
                done = event
        pid = client.info()["pid"]
    os.kill(pid, signal.SIGTERM)
    return {"answer": text, "finish_reason": done.get("finish_reason"),
            "answer_tokens": done.get("usage", {}).get("tokens"), "error": done.get("message")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="training/configs/smollm2_cpu.yaml")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N steps (default: the recipe's epochs)")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--answer-tokens", type=int, default=256)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="starchat-bench-train-") as tmp:
        out = Path(tmp) / "run"
        argv = [sys.executable, "-m", "lsp_server", "train", args.config, "--output_dir", str(out)]
        if args.max_steps:
            argv += ["--max_steps", str(args.max_steps)]
        if args.lora:
            argv += ["--use_lora", "true"]
        started = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"starchat train failed ({proc.returncode}): {proc.stderr[-800:]}")
        from training.progress import read_log

        log = read_log(out)
        losses = [r["loss"] for r in log if "loss" in r]
        elapsed = [r["elapsed_s"] for r in log if "loss" in r]
        gaps = [b - a for a, b in zip(elapsed, elapsed[1:], strict=False)]
        summary = next((r for r in reversed(log) if "train_samples_per_second" in r), {})
        result = {
            "benchmark": "bench_train", "command": " ".join(["starchat", *argv[3:]]).replace(str(out), "TMP"),
            "cpu_count": os.cpu_count(), "wall_s": round(wall, 1),
            "steps": max((r["step"] for r in log), default=0),
            "step_s": round(statistics.median(gaps), 2) if gaps else None,
            "train_samples_per_second": summary.get("train_samples_per_second"),
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        }
        reply = answer(out, Path(tmp) / "rt", args.answer_tokens)
        result["stops_by_itself"] = reply["finish_reason"] == "stop"
        result.update({k: reply[k] for k in ("finish_reason", "answer_tokens", "answer")})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
