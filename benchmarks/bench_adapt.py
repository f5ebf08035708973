"""Adapting the embedded model to a real repository, measured as a user would see it.

    python benchmarks/bench_adapt.py [--repo PATH] [--positions N] [--no-humaneval]

1. ``starchat adapt REPO --out DIR --json`` — the user's own command, as a new process: its
   training time, base vs adapted on the held-out files (next-line exact match, edit
   similarity; the positions ``starchat eval repo`` scores), HumanEval pass@1 for both.
2. Decode speed of the adapted model (``default+DIR``: the base GGUF with the LoRA adapter,
   on llama.cpp) against the base (``default``) through ``starchat ask --stats``: 128 tokens,
   alternating rounds on warm workers, the median of each and their ratio. With
   ``--adapt-arg=--merge`` the adapted model is ``DIR/model.gguf`` (the adapter merged,
   written at 8 bits where the base is 4-bit) and the run-time adapter is measured beside it:
   speed, ``starchat eval repo`` score and (unless ``--no-humaneval``) ``starchat eval humaneval``
   at the chat scale it carries, so one run shows both forms a user can choose.

The default repository is the source of ``rich`` as pip installed it into this environment
(code nobody on this project wrote; ~0.8 MB of Python once its generated tables are left
out). Prints one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

QUESTION = "Write a Python function that parses a date string and explains each step."


def default_repo() -> tuple[str, str]:
    import importlib.metadata

    import rich

    return str(Path(rich.__file__).parent), f"rich {importlib.metadata.version('rich')}"


def log(text: str) -> None:
    print(f"[bench_adapt] {text}", file=sys.stderr, flush=True)


def starchat(args: list[str], env: dict) -> dict:
    """Run ``starchat ARGS`` as a user's new process; its last stdout line, the JSON result."""
    proc = subprocess.run([sys.executable, "-m", "lsp_server", *args], stdout=subprocess.PIPE, stderr=sys.stderr,
                          text=True, env=env, cwd=common.ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"starchat {' '.join(args[:2])} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def eval_repo(repo: str, spec: str, positions: int, env: dict) -> dict:
    """``starchat eval repo`` of ``spec`` on the same held-out positions as adapt scored."""
    return starchat(["eval", "repo", repo, "--model", spec, "--positions", str(positions), "--json"], env)


def eval_humaneval(spec: str, out_dir: Path, env: dict) -> float:
    """``starchat eval humaneval`` of ``spec`` (164 problems, greedy, sandboxed): pass@1."""
    return float(starchat(["eval", "humaneval", "--model", spec, "--out-dir", str(out_dir)], env)["pass@1"])


def ask_tok_per_s(spec: str, env: dict, tokens: int) -> float:
    return float(common.one_ask(spec, QUESTION, env, max_new_tokens=tokens)["stats"]["tok_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=None, help="repository to adapt to (default: the installed rich package)")
    parser.add_argument("--positions", type=int, default=300)
    parser.add_argument("--no-humaneval", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="alternating decode rounds")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per decode round")
    parser.add_argument("--adapt-arg", action="append", default=[], help="extra argument for starchat adapt")
    args = parser.parse_args()
    repo, what = (args.repo, args.repo) if args.repo else default_repo()
    out: dict = {"repo": what, "load_avg_start": common.load_avg()}
    with tempfile.TemporaryDirectory(prefix="bench-adapt-") as tmp:
        runtime = Path(tmp) / "run"
        env = dict(os.environ, STARCHAT_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1")
        adapter = Path(tmp) / "adapter"
        argv = ["adapt", repo, "--out", str(adapter), "--json", "--positions", str(args.positions),
                *(["--no-humaneval"] if args.no_humaneval else []), *args.adapt_arg]
        log(f"running: starchat {' '.join(argv)}")
        t0 = time.perf_counter()
        result = starchat(argv, env)
        out["adapt"] = {k: v for k, v in result.items() if k != "adapter"}
        out["adapt_wall_s"] = round(time.perf_counter() - t0, 1)
        base, new = result["base"]["exact_match"], result["adapted"]["exact_match"]
        out["exact_match_ratio"] = round(new / base, 3) if base else None
        if result.get("humaneval"):
            he = result["humaneval"]
            out["humaneval_problems_delta"] = round((he["adapted"] - he["base"]) * 164)
        try:
            specs = {"base": "default", "adapted": result["spec"]}
            if result.get("merged"):  # the adapted model is the merged file; the run-time adapter beside it
                specs["adapter_at_run_time"] = f"default+{adapter}"
                out["adapter_at_run_time"] = eval_repo(repo, specs["adapter_at_run_time"], args.positions, env)
                if result.get("humaneval"):
                    log("HumanEval of the run-time adapter (at the chat scale it carries)")
                    p = eval_humaneval(specs["adapter_at_run_time"], Path(tmp) / "he-run-time", env)
                    out["adapter_at_run_time"]["humaneval"] = p
                    out["adapter_at_run_time"]["humaneval_problems_delta"] = round(
                        (p - result["humaneval"]["base"]) * 164)
            for spec in specs.values():  # warm: workers started, prompts seen once
                ask_tok_per_s(spec, env, 8)
            rates: dict[str, list[float]] = {k: [] for k in specs}
            for r in range(args.rounds):
                for name in (list(specs) if r % 2 == 0 else list(reversed(specs))):
                    rates[name].append(ask_tok_per_s(specs[name], env, args.tokens))
            out["decode_tok_per_s"] = {k: common.summary(v, 2) for k, v in rates.items()}
            for name in specs:
                if name != "base":
                    out[f"decode_ratio_{name}_over_base"] = round(
                        common.median(rates[name]) / common.median(rates["base"]), 3)
        finally:
            common.stop_workers(runtime)
    out["load_avg_end"] = common.load_avg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
