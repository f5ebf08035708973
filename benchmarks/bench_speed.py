"""llama.cpp settings beyond the engine's defaults, measured in one run, as one JSON object on stdout.

All on the default spec (the embedded SmolLM2-135M Q4_1 GGUF):

- ``speculation``: each request kind the editor sends (``benchmarks/speed_requests.py``: Fix,
  Add docstring, Write tests, Explain, chat, chat about a selection, a code completion, and
  two copy-heavy ones), greedy, on llama.cpp with draft-free speculation on
  (``model.runtime.speculation``'s ``DEFAULT``; off unless asked for) and off, alternated: decode tok/s each way, their ratio,
  whether the two answers are identical, the answer's copied share (tokens in runs of 8 or
  more found verbatim in the prompt) and the drafted / kept tokens;
- ``busy``: ``starchat ask`` (128 tokens) through our worker and raw llama.cpp with its
  defaults (``xllamacpp`` alone, same file, in a process of its own), quiet and with two
  CPU-bound processes on the cores (a session of their own, as a build in another terminal),
  alternated.

The load average at start and end says whether the machine was quiet; the figures to
publish need a quiet machine. Every worker, server and process started here is stopped.

    python benchmarks/bench_speed.py [--quick] [--skip speculation,busy]

(Completion latency is ``bench_completion.py``'s; long answers are ``bench_model.py``'s.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from benchmarks.common import median  # noqa: E402


def log(message: str) -> None:
    print(f"[bench_speed {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- speculation on / off per request kind ------------------------------------------------------

def run_request(engine, request: dict) -> tuple[str, dict, list[int]]:
    """One request on an in-process engine, as the worker's scheduler runs it: (text, usage, prompt ids)."""
    from model.prompt.fim import stop_token_ids
    from model.serving.scheduler.base import build_prompt

    ids, _cut, params, heal = build_prompt(engine, request)
    fim = "fim" in request
    stops = stop_token_ids(engine.tokenizer) if fim else []
    parts: list[str] = []
    stamps: list[float] = []

    def on_delta(text: str) -> None:
        parts.append(text)
        stamps.append(time.perf_counter())

    cpu = time.process_time()
    outcome = engine.run(ids, params, threading.Event(), on_delta, stop_ids=stops, heal=heal, dry=not fim)
    usage = dict(outcome.usage, cpu_s=time.process_time() - cpu)
    # the whole answer's rate (an answer that repeats itself goes on as further requests, and
    # llama.cpp's own rate is then the last request's only): deltas after the first over their time
    if len(stamps) > 1 and stamps[-1] > stamps[0]:
        usage["tok_per_s"] = round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 2)
    return "".join(parts), usage, ids


def speculation_figures(repeats: int, max_new_tokens: int, variants: dict | None = None,
                        threads: int | None = None) -> dict:
    """Each request kind with speculation off and on (or each of ``variants``), alternated, after
    one unmeasured run each (the prompt is then in the slot's cache). Besides the rate, the
    process's CPU time per answer token, which a shared machine disturbs less than the clock."""
    from benchmarks.speed_requests import copied_share, requests
    from model.prompt.chat_format import encode_text
    from model.runtime import llamacpp_engine, speculation
    from model.runtime.spec import default_gguf_path

    variants = variants or {"on": speculation.DEFAULT}
    engines = {"off": llamacpp_engine.load(default_gguf_path(), slots=1, speculation=None, threads=threads)}
    for name, setting in variants.items():
        engines[name] = llamacpp_engine.load(default_gguf_path(), slots=1, speculation=setting, threads=threads)
    out: dict = {"settings": {name: vars(s) for name, s in variants.items()}, "max_new_tokens": max_new_tokens,
                 "repeats": repeats, "rate": "decode tok/s of the whole answer: streamed deltas after the first over their time",
                 "kinds": {}}
    for kind, request in requests(max_new_tokens).items():
        rates: dict[str, list[float]] = {name: [] for name in engines}
        cpu: dict[str, list[float]] = {name: [] for name in engines}
        texts: dict[str, str] = {}
        drafts: dict[str, dict] = {}
        for engine in engines.values():
            run_request(engine, request)
        for _ in range(repeats):
            for name, engine in engines.items():
                text, usage, ids = run_request(engine, request)
                rates[name].append(usage["tok_per_s"])
                cpu[name].append(1000 * usage["cpu_s"] / max(1, usage["tokens"]))
                texts[name] = text
                drafts[name] = {"drafted": usage.get("draft_tokens", 0), "kept": usage.get("draft_accepted", 0)}
        off = engines["off"]
        answer_ids = encode_text(off.tokenizer, texts["off"])
        row = {"answer_tokens": len(answer_ids), "copied_share": copied_share(ids, answer_ids),
               "off_tok_s": median(rates["off"], 1), "off_cpu_ms_per_token": median(cpu["off"], 2)}
        for name in variants:
            row[f"{name}_tok_s"] = median(rates[name], 1)
            row[f"{name}_cpu_ms_per_token"] = median(cpu[name], 2)
            row[f"{name}_over_off"] = round(row[f"{name}_tok_s"] / row["off_tok_s"], 3) if row["off_tok_s"] else None
            row[f"{name}_identical_text"] = texts[name] == texts["off"]
            row[f"{name}_drafts"] = drafts[name]
        out["kinds"][kind] = row
        log(f"speculation {kind}: {row}")
    for engine in engines.values():
        engine.server = None
    return out


# --- a busy machine: `starchat ask` against raw llama.cpp, quiet and with two CPU-bound processes ---

QUESTION = "Write a Python function that reverses a string, then explain how it works."
ASK_TOKENS = 128
QUIET_SETTLE_S = 5.0

# Raw llama.cpp with its defaults (threads, polling) on the same file, in a process of its own:
# each stdin line is one request; each stdout line its client-side rates.
RAW_PEER = r"""
import json, os, sys, time, xllamacpp
p = xllamacpp.CommonParams()
p.model.path = sys.argv[1]
p.verbosity = -1
p.hostnames = [os.path.join(sys.argv[2], "s.sock")]  # a private folder of the parent's, removed by it
server = xllamacpp.Server(p)
print(json.dumps({"ready": True, "threads": p.cpuparams.n_threads}), flush=True)
for line in sys.stdin:
    body = json.loads(line)
    limit_s = body.pop("limit_s", 300)
    stamps, timings, t0 = [], {}, time.perf_counter()
    def cb(chunk):
        for c in chunk.get("choices") or ():
            if (c.get("delta") or {}).get("content"):
                stamps.append(time.perf_counter())
        timings.update(chunk.get("timings") or {})
        return time.perf_counter() - t0 > limit_s
    server.handle_chat_completions(body, cb)
    n = len(stamps)
    print(json.dumps({"tokens": int(timings.get("predicted_n", n)), "ttft_s": round(stamps[0] - t0, 3) if n else None,
                      "tok_per_s": round(float(timings.get("predicted_per_second", 0.0)), 2),
                      "client_tok_per_s": round((n - 1) / (stamps[-1] - stamps[0]), 2) if n > 1 else 0.0}),
          flush=True)
"""


class RawPeer:
    """Raw llama.cpp (``xllamacpp`` with its defaults) in a child process, one request a line."""

    def __init__(self, model_path: Path):
        import subprocess

        self.folder = tempfile.mkdtemp(prefix="starchat-raw-")
        self.proc = subprocess.Popen([sys.executable, "-c", RAW_PEER, str(model_path), self.folder], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.info = json.loads(self.proc.stdout.readline())

    def ask(self, question: str, tokens: int, limit_s: float) -> dict:
        body = {"messages": [{"role": "user", "content": question}], "max_tokens": tokens, "temperature": 0.0,
                "ignore_eos": True, "stream": True, "timings_per_token": True, "limit_s": limit_s}
        self.proc.stdin.write(json.dumps(body) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        common.stop_pids([self.proc.pid])
        shutil.rmtree(self.folder, ignore_errors=True)


def our_ask(env: dict) -> dict:
    """A user's ``starchat ask`` (a new process) on the running worker: decode tok/s over the answer."""
    stats = common.one_ask("default", QUESTION, env, max_new_tokens=ASK_TOKENS)["stats"]
    return {"tokens": stats["tokens"], "tok_per_s": stats["tok_per_s"], "threads": stats.get("threads"),
            "total_s": stats.get("total_s")}


def busy_loops(n: int = 2) -> list[int]:
    """``n`` CPU-bound processes in a session of their own (as a build in another terminal)."""
    import subprocess

    return [subprocess.Popen([sys.executable, "-c", "while 1: pass"], start_new_session=True).pid for _ in range(n)]


def busy_figures(runtime: Path, repeats: int, limit_s: float) -> dict:
    """``starchat ask`` 128 tokens through our worker and raw llama.cpp with its defaults,
    alternated, on a quiet machine and then with two CPU-bound processes on the cores."""
    from model.runtime.spec import ModelSpec, default_gguf_path
    from model.serving import protocol

    env = dict(os.environ, STARCHAT_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1")
    _, pid = common.start_worker("default", protocol.socket_path_for(ModelSpec.parse("default")))
    raw = RawPeer(default_gguf_path())
    out: dict = {"question": QUESTION, "tokens": ASK_TOKENS, "repeats": repeats, "raw_threads": raw.info["threads"],
                 "rate": "llama.cpp's own decode tok/s (timings.predicted_per_second) of the answer: ours from "
                         "`starchat ask --stats`, raw from its stream; raw ignores the end token",
                 "raw_limit_s": limit_s}
    loops: list[int] = []
    try:
        our_ask(env), raw.ask(QUESTION, ASK_TOKENS, limit_s)  # warm: prompts in the caches
        for phase in ("quiet", "busy"):
            if phase == "busy":
                loops = busy_loops()
                time.sleep(3)  # as a build that has started: the worker's CPU watch sees it
            ours, peer = [], []
            for _ in range(repeats):
                if phase == "quiet":
                    # raw's answer just used both cores, and the worker's CPU watch counts that as
                    # another process's load for 4 s (model.runtime.cpu_watch): on a quiet machine
                    # nothing else runs, so let it see the quiet first
                    time.sleep(QUIET_SETTLE_S)
                ours.append(our_ask(env))
                peer.append(raw.ask(QUESTION, ASK_TOKENS, limit_s))
            row = {"ours_tok_s": median([r["tok_per_s"] for r in ours], 2),
                   "raw_tok_s": median([r["tok_per_s"] for r in peer], 2),
                   "ours_threads": [r["threads"] for r in ours], "ours_tokens": [r["tokens"] for r in ours],
                   "raw_tokens": [r["tokens"] for r in peer], "load_avg": common.load_avg()}
            row["ours_over_raw"] = round(row["ours_tok_s"] / row["raw_tok_s"], 3) if row["raw_tok_s"] else None
            out[phase] = row
            log(f"busy machine, {phase}: {row}")
            common.stop_pids(loops)
            loops = []
    finally:
        common.stop_pids(loops)
        raw.close()
        common.stop_pids([pid])
    return out


# --- the run ------------------------------------------------------------------------------

SECTIONS = ("speculation", "busy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length of the speculation requests")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, short answers")
    parser.add_argument("--skip", default="", help="comma-separated: " + ", ".join(SECTIONS))
    parser.add_argument("--spec-threads", type=int, default=None,
                        help="llama.cpp threads of the speculation section's engines (default: all cores)")
    parser.add_argument("--spec-variants", default="",
                        help="compare these speculation settings instead of the default: kind:lookup:draft,...")
    parser.add_argument("--raw-limit-s", type=float, default=180,
                        help="stop a raw llama.cpp answer after this long (its rate so far is reported)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a stopped run still cleans up
    skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        args.repeats, args.max_new_tokens = 1, 64

    result: dict = {"load_avg_start": common.load_avg(), "cpu_count": os.cpu_count(), "args": vars(args)}
    # nothing of the benchmark's may outlive it: workers, sockets, files
    with common.private_runtime("starchat-bench-speed-") as (_tmp, runtime):
        if "speculation" not in skip:
            variants = None
            if args.spec_variants:
                from model.runtime.speculation import Speculation

                variants = {v: Speculation(v.split(":")[0], int(v.split(":")[1]), int(v.split(":")[2]))
                            for v in args.spec_variants.split(",")}
            log("speculation")
            result["speculation"] = speculation_figures(args.repeats, args.max_new_tokens, variants, args.spec_threads)
        if "busy" not in skip:
            log("busy machine")
            result["busy"] = busy_figures(runtime, args.repeats, args.raw_limit_s)
    result["load_avg_end"] = common.load_avg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
