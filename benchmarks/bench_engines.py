"""llama.cpp through our worker vs llama.cpp alone, as one JSON object on stdout.

All on the default spec (the embedded Q4_1 GGUF), in one run:
- ``raw``: decode tok/s of ``xllamacpp`` alone in this process, same file, same threads,
  same request body the worker sends (DRY on) and with DRY off;
- ``worker``: cold start (process spawn to ready, tokenizer already cached), decode tok/s
  of the same prompt streamed through the worker (client side: tokens after the first over
  the time since the first), and ``decode_ratio`` = worker / raw (the target is >= 0.9);
- ``chat``: a ~1,000-token prompt with a 300-token answer, then its second turn (TTFT,
  cached prompt tokens);
- ``burst``: 4 requests at once, aggregate tok/s;
- ``ask``: ``starchat ask`` spawned against the warm worker, process start to first byte;
- ``rss``: the worker's resident memory (now and peak);
- ``prefill``: a ~1,000-token prefill on raw llama.cpp for several micro-batch sizes and
  thread counts (why it lost to torch's 1.9 s on these cores).

Timings on a shared machine vary; the ratio is measured back to back. Usage:
python benchmarks/bench_engines.py [--tokens N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LONG_ANSWER = "Count from 1 to 400, writing each number in words on its own line."
CODE = (ROOT / "model" / "budget.py").read_text()


def raw_server(threads: int, slots: int = 4, ubatch: int | None = None, batch: int | None = None):
    import xllamacpp

    from model.runtime.loading import default_gguf_path

    p = xllamacpp.CommonParams()
    p.model.path = str(default_gguf_path())
    p.n_ctx, p.n_parallel, p.kv_unified = 8192, slots, True
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
    p.verbosity = -1
    if ubatch:
        p.n_ubatch = ubatch
    if batch:
        p.n_batch = batch
    d = tempfile.mkdtemp()
    p.hostnames = [os.path.join(d, "s.sock")]
    return xllamacpp.Server(p)


def stream_rate(run) -> dict:
    """Client-side decode rate of one streamed request: ``run(on_text)`` blocks till done."""
    stamps: list[float] = []
    t0 = time.perf_counter()
    run(lambda _text: stamps.append(time.perf_counter()))
    if len(stamps) < 2:
        return {"tokens": len(stamps), "tok_per_s": 0.0}
    return {"tokens": len(stamps), "ttft_s": round(stamps[0] - t0, 3),
            "tok_per_s": round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 1)}


def raw_decode(server, body: dict) -> dict:
    def run(on_text):
        def cb(chunk):
            for c in chunk.get("choices") or ():
                if c.get("text"):
                    on_text(c["text"])
            return False
        server.handle_completions(dict(body), cb)
    return stream_rate(run)


def worker_decode(path: Path, request: dict) -> dict:
    from model.serving.client import WorkerClient

    def run(on_text):
        with WorkerClient(socket_path=path) as c:
            for e in c.generate(request):
                if e["type"] == "delta":
                    on_text(e["text"])
    return stream_rate(run)


def turn(path: Path, messages: list[dict], max_new: int) -> tuple[str, dict]:
    from model.serving.client import WorkerClient

    parts, t0, first, done = [], time.perf_counter(), None, {}
    with WorkerClient(socket_path=path) as c:
        for e in c.generate({"messages": messages, "params": {"max_new_tokens": max_new}}):
            if e["type"] == "delta":
                first = first or time.perf_counter()
                parts.append(e["text"])
            elif e["type"] in ("done", "error"):
                done = e
    u = done.get("usage", {})
    return "".join(parts), {"ttft_s": round((first or t0) - t0, 3), "total_s": round(time.perf_counter() - t0, 2),
                            "prompt_tokens": u.get("prompt_tokens"), "cached_prompt_tokens": u.get("cached_prompt_tokens"),
                            "tokens": u.get("tokens")}


def burst(path: Path, n: int = 4, max_new: int = 128) -> dict:
    from model.serving.client import WorkerClient

    counts = [0] * n

    def one(i):
        with WorkerClient(socket_path=path) as c:
            for e in c.generate({"messages": [{"role": "user", "content": f"Write a Python function number {i} that sorts a list."}],
                                 "params": {"max_new_tokens": max_new}}):
                if e["type"] == "done":
                    counts[i] = e["usage"]["tokens"]
    t = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    return {"requests": n, "tokens": sum(counts), "wall_s": round(wall, 2), "aggregate_tok_per_s": round(sum(counts) / wall, 1)}


def ask_first_byte(runtime: str) -> float:
    env = dict(os.environ, STARCHAT_RUNTIME_DIR=runtime)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lsp_server", "ask", "Say hi.", "--max-new-tokens", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    assert proc.stdout is not None
    proc.stdout.read(1)
    first = time.perf_counter() - t
    proc.wait(120)
    return round(first, 3)


def rss(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))}
    return {"rss_mb": kb["VmRSS"] // 1024, "peak_mb": kb["VmHWM"] // 1024}


def prefill_sweep(prompt_ids: list[int], threads: int) -> list[dict]:
    out = []
    for th, ub in [(threads, 512), (threads, 256), (threads, 128), (threads, 1024), (1, 512)]:
        server = raw_server(th, slots=1, ubatch=ub, batch=max(ub, 2048))
        times = []
        for _ in range(2):
            res = server.handle_completions({"prompt": prompt_ids, "n_predict": 1, "cache_prompt": False})
            times.append(res.get("timings", {}).get("prompt_ms", 0.0) / 1000)
        out.append({"threads": th, "n_ubatch": ub, "prompt_tokens": len(prompt_ids), "prefill_s": round(min(times), 2)})
        del server
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256, help="decode length for the speed figures")
    parser.add_argument("--skip-prefill", action="store_true")
    args = parser.parse_args()

    from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT
    from model.prompt.params import GenerationParams
    from model.runtime import llamacpp_engine
    from model.serving.client import WorkerClient, ensure_worker

    threads = llamacpp_engine.default_threads()
    result: dict = {"threads": threads, "load_avg": os.getloadavg()}
    runtime = tempfile.mkdtemp(prefix="bench-engines-")
    os.environ["STARCHAT_RUNTIME_DIR"] = runtime
    from model.serving import protocol

    path = protocol.socket_path_for("default")
    ensure_worker("default", path)  # warms the tokenizer cache; the timed start is the second
    with WorkerClient(socket_path=path) as c:
        while not (info := c.info()).get("ready"):
            time.sleep(0.02)
    os.kill(info["pid"], 15)
    time.sleep(0.5)
    t = time.perf_counter()
    ensure_worker("default", path)
    with WorkerClient(socket_path=path) as c:
        while not (info := c.info()).get("ready"):
            time.sleep(0.02)
    result["worker_cold_start_s"] = round(time.perf_counter() - t, 2)
    pid = info["pid"]

    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": LONG_ANSWER}]
    request = {"messages": messages, "params": {"max_new_tokens": args.tokens}}
    engine = llamacpp_engine.load(llamacpp_engine_path(), slots=4)  # for the ids and the body only
    body = engine.request_body(engine.chat_format.encode(messages), GenerationParams(max_new_tokens=args.tokens))
    long_ids = engine.chat_format.encode([{"role": "user", "content": "Explain this code:\n" + CODE[:3600]}])
    del engine
    raw = raw_server(threads)
    rounds = []
    for _ in range(2):  # alternate, so load on the machine hits both alike
        w = worker_decode(path, request)
        r = raw_decode(raw, body)
        r_nodry = raw_decode(raw, {**body, "dry_multiplier": 0.0})
        rounds.append({"worker": w, "raw": r, "raw_without_dry": r_nodry})
    del raw
    best = {k: max(rd[k]["tok_per_s"] for rd in rounds) for k in ("worker", "raw", "raw_without_dry")}
    result["decode"] = {"rounds": rounds, "best_tok_per_s": best,
                        "decode_ratio": round(best["worker"] / best["raw"], 3) if best["raw"] else None}

    chat = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
            {"role": "user", "content": "Explain this code:\n" + CODE[:3600]}]
    answer, first = turn(path, chat, 300)
    _, second = turn(path, [*chat, {"role": "assistant", "content": answer},
                            {"role": "user", "content": "Which part would you simplify?"}], 300)
    result["chat"] = {"first_turn": first, "second_turn": second}
    result["burst"] = burst(path)
    result["ask_spawn_to_first_byte_s"] = [ask_first_byte(runtime) for _ in range(3)]
    result["worker_rss"] = rss(pid)
    if not args.skip_prefill:
        result["prefill"] = prefill_sweep(long_ids, threads)
    os.kill(pid, 15)
    print(json.dumps(result, indent=1))


def llamacpp_engine_path():
    from model.runtime.loading import default_gguf_path

    return default_gguf_path()


if __name__ == "__main__":
    main()
