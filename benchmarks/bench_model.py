"""Model-layer figures as one JSON object on stdout.

- cold load (GGUF -> safetensors conversion into an empty cache) and warm load, each in a
  fresh process, so the import of torch/transformers is counted as a user would see it;
- worker cold start (process start to model ready), full precision and ``@int4``;
- TTFT at ~40 / ~500 / ~2,000 prompt tokens, decode tok/s, through the engine;
- decode tok/s for each option: our runner fp32 (default), our runner int4, the engine
  over transformers' model, and plain ``model.generate``;
- int4 vs fp32 greedy agreement on a few prompts (identical answers, first divergence);
- a second turn of a ~2,000-token conversation (prefix reuse) vs its first turn;
- aggregate tok/s of 1, 4 and 8 concurrent requests through one worker, fp32 and int4;
- peak RSS of this process.
Medians over ``--repeats`` runs. Usage: python benchmarks/bench_model.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LOAD_SNIPPET = (
    "import time; t=time.perf_counter(); from model.runtime.loading import load_model; "
    "load_model('default'); print(time.perf_counter()-t)"
)


def timed_load(env: dict) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", LOAD_SNIPPET], check=True, env=env, cwd=ROOT,
                   capture_output=True)
    return round(time.perf_counter() - t, 2)


def worker_cold_start(spec: str = "default") -> float:
    from model.serving.client import WorkerClient, ensure_worker

    with tempfile.TemporaryDirectory() as rt:
        path = Path(rt) / "w.sock"
        t = time.perf_counter()
        ensure_worker(spec, path)
        with WorkerClient(socket_path=path) as client:
            while not client.info().get("ready"):
                time.sleep(0.02)
            elapsed = time.perf_counter() - t
            os.kill(client.info()["pid"], 15)
    return round(elapsed, 2)


def prompt_of(tokenizer, n_tokens: int) -> list[dict]:
    filler = "def f_{i}(x):\n    return x * {i} + 1\n\n"
    text, i = "", 0
    while len(tokenizer(text)["input_ids"]) < n_tokens - 30:
        text += filler.format(i=i)
        i += 1
    return [{"role": "user", "content": "Explain this code briefly:\n" + text}]


def peak_rss_mib(pid: int) -> float | None:
    """A process's peak resident memory (Linux /proc), after it served the requests."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


BANK = [{"role": "user", "content": "Write a Python class for a bank account with deposit, withdraw and balance, with docstrings."}]


def decode_rate(engine, repeats: int, decode_tokens: int) -> float:
    rates = []
    for _ in range(repeats):
        s = engine.generate(BANK, {"max_new_tokens": decode_tokens})
        list(s)
        rates.append(s.usage["tok_per_s"])
    return median(rates)


AGREEMENT_PROMPTS = [
    "Write a Python function that reverses a string.",
    "Explain what a mutex is, briefly.",
    "Fix this code:\n```python\ndef mean(xs):\n    return sum(xs) / len(xs) + 1\n```",
    "Write a SQL query that counts orders per customer.",
    "What does `git rebase` do?",
    "Write a JavaScript function that debounces another function.",
]


def agreement(reference, other, tokens: int = 64) -> dict:
    """How often ``other`` gives the reference's greedy answer, and where they part."""
    same, diverge = 0, []
    for q in AGREEMENT_PROMPTS:
        msgs = [{"role": "user", "content": q}]
        a, b = reference.generate(msgs, {"max_new_tokens": tokens}), other.generate(msgs, {"max_new_tokens": tokens})
        list(a), list(b)
        ga, gb = a.decoder.generated, b.decoder.generated
        same += ga == gb
        diverge.append(next((i for i, (x, y) in enumerate(zip(ga, gb, strict=False)) if x != y), min(len(ga), len(gb))))
    return {"int4_identical_answers": f"{same}/{len(AGREEMENT_PROMPTS)}", "int4_first_divergence_tokens": diverge}


def engine_figures(engine, loaded, hf_loaded, repeats: int, decode_tokens: int) -> dict:
    import torch

    from model.runtime.engine import Engine

    out: dict = {}
    for n in (40, 500, 2000):
        msgs = prompt_of(loaded.tokenizer, n)
        ttfts, prompt_tokens = [], 0
        for _ in range(repeats):
            engine.clear_prefix_cache()
            s = engine.generate(msgs, {"max_new_tokens": 1})
            list(s)
            ttfts.append(s.usage["ttft_s"])
            prompt_tokens = s.usage["prompt_tokens"]
        out[f"ttft_s@{prompt_tokens}"] = median(ttfts)
    ids = engine.chat_format.encode(BANK)
    ref_rates = []
    model = hf_loaded.model
    for _ in range(repeats):
        with torch.inference_mode():
            inp = torch.tensor([ids], device=engine.device)
            model.generate(inp, max_new_tokens=1, do_sample=False)  # prefill only
            t0 = time.perf_counter()
            g = model.generate(inp, max_new_tokens=1, do_sample=False)
            prefill = time.perf_counter() - t0
            t0 = time.perf_counter()
            g = model.generate(inp, max_new_tokens=decode_tokens, do_sample=False,
                               min_new_tokens=decode_tokens)
            total = time.perf_counter() - t0
        ref_rates.append((g.shape[1] - len(ids) - 1) / max(1e-9, total - prefill))
    out["decode_tok_s"] = decode_rate(engine, repeats, decode_tokens)
    out["transformers_engine_decode_tok_s"] = decode_rate(Engine(hf_loaded), repeats, decode_tokens)
    out["generate_decode_tok_s"] = median(ref_rates)
    out["engine_vs_generate"] = round(out["decode_tok_s"] / out["generate_decode_tok_s"], 3)
    # Second turn of a ~2,000-token conversation: only the new tokens are prefilled.
    convo = prompt_of(loaded.tokenizer, 2000)
    firsts, seconds = [], []
    for _ in range(repeats):
        engine.clear_prefix_cache()
        s1 = engine.generate(convo, {"max_new_tokens": 24})
        reply = "".join(s1)
        firsts.append(s1.usage["ttft_s"])
        turn2 = convo + [{"role": "assistant", "content": reply}, {"role": "user", "content": "Now shorter, please."}]
        s2 = engine.generate(turn2, {"max_new_tokens": 1})
        list(s2)
        seconds.append(s2.usage["ttft_s"])
    out["first_turn_ttft_s@2k"] = median(firsts)
    out["second_turn_ttft_s@2k"] = median(seconds)
    out["second_vs_first_turn"] = round(out["second_turn_ttft_s@2k"] / out["first_turn_ttft_s@2k"], 3)
    return out


def concurrency_figures(tokens: int, spec: str = "default") -> dict:
    from model.serving.client import WorkerClient, ensure_worker

    out: dict = {}
    tag = "" if spec == "default" else "_" + spec.split("@")[-1]
    with tempfile.TemporaryDirectory() as rt:
        path = Path(rt) / "w.sock"
        ensure_worker(spec, path)
        prompts = ["Write a Python function that checks if a number is prime.",
                   "Write a Python function that reverses a linked list.",
                   "Write a JavaScript function that debounces another function.",
                   "Write a Python function that merges two sorted lists."]

        def one(i: int, counts: list) -> None:
            with WorkerClient(socket_path=path) as c:
                req = {"messages": [{"role": "user", "content": prompts[i % 4]}],
                       "params": {"max_new_tokens": tokens, "stop": ["\x00never"]}}
                for ev in c.generate(req):
                    if ev["type"] == "done":
                        counts[i] = ev["usage"]["tokens"]

        with WorkerClient(socket_path=path) as c:  # warm the worker
            while not c.info().get("ready"):
                time.sleep(0.05)
        for n in (1, 4, 8):
            counts = [0] * n
            threads = [threading.Thread(target=one, args=(i, counts)) for i in range(n)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            out[f"aggregate{tag}_tok_s@{n}"] = round(sum(counts) / (time.perf_counter() - t), 2)
        for n in (4, 8):
            out[f"concurrency{tag}_speedup@{n}"] = round(out[f"aggregate{tag}_tok_s@{n}"] / out[f"aggregate{tag}_tok_s@1"], 2)
        with WorkerClient(socket_path=path) as c:
            t = time.perf_counter()
            first = None
            for ev in c.generate({"messages": [{"role": "user", "content": "Hi"}], "params": {"max_new_tokens": 4}}):
                if ev["type"] == "delta" and first is None:
                    first = time.perf_counter() - t
            out[f"warm_worker{tag}_client_ttft_s"] = round(first or 0, 3)
            pid = c.info()["pid"]
            out[f"worker{tag}_peak_rss_mib"] = peak_rss_mib(pid)
            os.kill(pid, 15)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 32 tokens, no cold load")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.decode_tokens = 1, 32
    result: dict = {"cpu_count": os.cpu_count()}
    import torch

    result["torch_threads"] = torch.get_num_threads()
    if not args.quick:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, STARCHAT_CACHE_DIR=cache)
            result["cold_load_s"] = timed_load(env)
            result["warm_load_s"] = median([timed_load(env) for _ in range(args.repeats)])
    result["worker_cold_start_s"] = median([worker_cold_start() for _ in range(max(5, args.repeats))])
    result["worker_cold_start_int4_s"] = median([worker_cold_start("default@int4") for _ in range(args.repeats)])
    from model.runtime.engine import Engine
    from model.runtime.loading import load_model

    loaded = load_model("default")
    engine = Engine(loaded)
    result.update(engine_figures(engine, loaded, load_model("default", runner="transformers"),
                                 args.repeats, args.decode_tokens))
    int4 = Engine(load_model("default@int4"))
    result["decode_int4_tok_s"] = decode_rate(int4, args.repeats, args.decode_tokens)
    result.update(agreement(engine, int4))
    result.update(concurrency_figures(args.decode_tokens))
    result.update(concurrency_figures(args.decode_tokens, "default@int4"))
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
