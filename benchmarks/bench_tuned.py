"""Tuned against base, measured in one run -> one JSON on stdout.

    python benchmarks/bench_tuned.py                      # train with the CPU recipe, then evaluate
    python benchmarks/bench_tuned.py --tuned runs/smollm2-starchat   # reuse a trained folder
    python benchmarks/bench_tuned.py --limit 3 --lm-limit 4 --judge-limit 1   # a smoke run

What runs, each step a real `starchat` command in its own process (the commands are in the
JSON, with `TUNED`/`OUT` standing for the folders), all on the torch engine in fp32
(`STARCHAT_ENGINE=torch`), greedy, same settings on both sides:

- base: the embedded model (`default`) on the torch engine, i.e. the GGUF de-quantized to fp32,
  the same weights `starchat train` starts from (`model.runtime.loading.local_folder`), in the model's
  own chat template;
- tuned: the folder `starchat train CONFIG` writes, in the StarChat format it was trained on;
- HumanEval, all 164 problems, greedy pass@1 (`starchat eval humaneval`);
- `starchat_python_mc`, our 60-question lm-eval task, acc and acc_norm, both sides through
  lm-eval's own `hf` class (`--engine hf`: the base as its de-quantized folder);
- answers to every 14th prompt of `training/data/code_eval_prompts.jsonl` (8 prompts, 160 new
  tokens: the subset docs/eval.md uses), judged pairwise in both orders by a local judge
  (`--judge`, default: the embedded model, primed scoring), with per-order counts.

Two chains run side by side (the machine has 2 cores; set STARCHAT_THREADS=1 and
OMP_NUM_THREADS=1 so each takes one): training then the tuned evaluations, and the base
evaluations. The judge runs when both are done. Everything goes under `--out-dir` (default:
a temp dir removed at the end). Wall times are per step and for the whole run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = "training/configs/smollm2_cpu.yaml"
JUDGE_EVERY = 14  # docs/eval.md's judge subset: 8 prompts spread over the categories
JUDGE_TOKENS = 160


def run_step(name: str, argv: list[str], logs: Path, env: dict, names: dict[str, str]) -> dict:
    """Run one `starchat` command; its stdout's last JSON line is the result."""
    started = time.perf_counter()
    with (logs / f"{name}.log").open("w", encoding="utf-8") as err:
        proc = subprocess.run([sys.executable, "-m", "lsp_server", *argv], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=err, text=True)
    wall = round(time.perf_counter() - started, 1)
    command = " ".join(["STARCHAT_ENGINE=torch starchat", *argv])
    for path, label in names.items():
        command = command.replace(path, label)
    step = {"command": command, "step_wall_s": wall, "rc": proc.returncode}
    if proc.returncode != 0:
        tail = (logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")[-600:]
        step["error"] = tail
        print(f"bench_tuned: {name} failed (rc {proc.returncode}): {tail}", file=sys.stderr)
        return step
    for line in reversed(proc.stdout.splitlines()):  # `starchat eval` prints one JSON line last
        try:
            step["result"] = json.loads(line)
            break
        except ValueError:
            continue
    print(f"bench_tuned: {name} done in {wall} s", file=sys.stderr)
    return step


def per_order(judgments: Path) -> dict:
    """Win/tie/loss of the tuned answer counted separately for each order of presentation."""
    counts = {order: {"win": 0, "tie": 0, "loss": 0, "unparseable": 0} for order in ("ab", "ba")}
    if not judgments.exists():
        return counts
    for line in judgments.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        c = counts[row["order"]]
        if "score_a" not in row:
            c["unparseable"] += 1
        else:
            a, b = row["score_a"], row["score_b"]
            c["win" if a > b else "loss" if a < b else "tie"] += 1
    return {"tuned_first" if k == "ab" else "base_first": v for k, v in counts.items()}


def train_summary(folder: Path) -> dict:
    from training.progress import read_log

    log = read_log(folder)
    losses = [r["loss"] for r in log if "loss" in r]
    return {"steps": max((r["step"] for r in log), default=0),
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=CONFIG, help="training recipe (default: the CPU recipe)")
    parser.add_argument("--tuned", help="reuse this trained folder instead of training")
    parser.add_argument("--out-dir", help="keep everything here (default: a temp dir, removed)")
    parser.add_argument("--limit", type=int, help="only the first N HumanEval problems (default: all 164)")
    parser.add_argument("--lm-limit", type=int, help="only the first N lm-eval questions (default: all 60)")
    parser.add_argument("--judge-limit", type=int, help="only the first N judge prompts (default: all 8)")
    parser.add_argument("--judge", default="default", help="local judge model spec (default: the embedded model)")
    parser.add_argument("--train-arg", action="append", default=[],
                        help="extra `starchat train` argument, e.g. --train-arg=--learning_rate=5e-5")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="starchat-bench-tuned-") if not args.out_dir else None
    out = Path(args.out_dir or tmp.name).resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, STARCHAT_ENGINE="torch", PYTHONPATH=str(ROOT))
    tuned = Path(args.tuned).resolve() if args.tuned else out / "tuned"
    names = {str(tuned): "TUNED", str(out): "OUT"}
    started = time.perf_counter()
    steps: dict[str, dict] = {}

    # Convert the GGUF once, before both chains need it (they would race on the cache folder).
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's import warning prints to stdout
        from model.runtime.loading import local_folder

        base_folder = local_folder("default")
    steps["base_folder"] = {"folder": base_folder, "step_wall_s": round(time.perf_counter() - t0, 1)}

    he_limit = ["--limit", str(args.limit)] if args.limit else []
    lm_limit = ["--limit", str(args.lm_limit)] if args.lm_limit else []
    gen_opts = ["--every", str(JUDGE_EVERY), "--max-new-tokens", str(JUDGE_TOKENS), "--no-progress"]
    if args.judge_limit:
        gen_opts += ["--limit", str(args.judge_limit)]  # applies after --every

    def evaluations(side: str, spec: str) -> list[tuple[str, list[str]]]:
        return [
            (f"humaneval_{side}", ["eval", "humaneval", "--model", spec, *he_limit, "--no-progress",
                                   "--out-dir", str(out / f"humaneval_{side}")]),
            (f"lm_eval_{side}", ["eval", "lm-eval", "--model", spec, "--engine", "hf", "--tasks",
                                 "starchat_python_mc", *lm_limit, "--out-dir", str(out / f"lm_eval_{side}")]),
            (f"answers_{side}", ["eval", "generate", "--model", spec, *gen_opts,
                                 "--out", str(out / f"answers_{side}.jsonl")]),
        ]

    tuned_chain = [] if args.tuned else [
        ("train", ["train", args.config, "--output_dir", str(tuned), *args.train_arg])]
    tuned_chain += evaluations("tuned", str(tuned))
    base_chain = evaluations("base", "default")

    def run_chain(chain):
        for name, argv in chain:
            try:
                steps[name] = run_step(name, argv, logs, env, names)
            except Exception as exc:  # report it in the JSON, let the other chain finish
                steps[name] = {"rc": None, "error": f"{type(exc).__name__}: {exc}"}
            if steps[name]["rc"] != 0 and name == "train":
                return  # nothing to evaluate

    threads = [threading.Thread(target=run_chain, args=(c,)) for c in (tuned_chain, base_chain)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not args.tuned and steps.get("train", {}).get("rc") == 0:
        steps["train"]["result"] = train_summary(tuned)
    if all(steps.get(f"answers_{s}", {}).get("rc") == 0 for s in ("tuned", "base")):
        steps["judge"] = run_step("judge", ["eval", "judge", "--a", str(out / "answers_tuned.jsonl"),
                                            "--b", str(out / "answers_base.jsonl"), "--judge", args.judge,
                                            "--no-progress", "--out-dir", str(out / "judge")],
                                  logs, env, names)
        steps["judge"]["per_order"] = per_order(out / "judge" / "judgments.jsonl")

    result = {"benchmark": "bench_tuned", "engine": "torch (fp32), greedy, both sides",
              "base": "default (embedded SmolLM2-135M-Instruct, de-quantized to fp32)",
              "tuned": "TUNED" if not args.tuned else str(args.tuned),
              "config": None if args.tuned else args.config,
              "threads": {k: os.environ.get(k) for k in ("STARCHAT_THREADS", "OMP_NUM_THREADS")},
              "cpu_count": os.cpu_count(), "loadavg_end": os.getloadavg(),
              "wall_s": round(time.perf_counter() - started, 1), "steps": steps}
    result["summary"] = summarize(steps)
    print(json.dumps(result, indent=1))
    if tmp is not None:
        tmp.cleanup()


def summarize(steps: dict) -> dict:
    """The headline figures, tuned against base."""
    def get(name: str, *keys):
        value = steps.get(name, {}).get("result")
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    summary = {}
    for side in ("base", "tuned"):
        summary[side] = {
            "humaneval_pass@1": get(f"humaneval_{side}", "pass@1"),
            "humaneval_passed": (get(f"humaneval_{side}", "statuses") or {}).get("passed", 0)
            if get(f"humaneval_{side}") else None,
            "humaneval_problems": get(f"humaneval_{side}", "problems"),
            "python_mc_acc": get(f"lm_eval_{side}", "results", "starchat_python_mc", "acc,none"),
            "python_mc_acc_norm": get(f"lm_eval_{side}", "results", "starchat_python_mc", "acc_norm,none"),
            "python_mc_n": get(f"lm_eval_{side}", "n_samples", "starchat_python_mc"),
        }
    judge = steps.get("judge", {}).get("result") or {}
    summary["judge_tuned_vs_base"] = {k: judge.get(k) for k in (
        "prompts", "win", "tie", "loss", "mean_score_a", "mean_score_b", "position_consistency",
        "first_position_win_share", "unparseable", "verdicts")}
    summary["judge_per_order"] = steps.get("judge", {}).get("per_order")
    return summary


if __name__ == "__main__":
    main()
