"""Every model-side figure in one run, as one JSON object on stdout.

All on the default spec (the embedded SmolLM2-135M Q4_1 GGUF) unless said otherwise:

- ``decode``: decode tok/s of every engine that runs the spec, back to back: our worker on
  llama.cpp (the default engine), ``xllamacpp`` alone (same file, same threads, same
  request body), ``worker_over_raw`` (target >= 0.9); our torch runner fp32 (what
  ``STARCHAT_ENGINE=torch`` serves), ``default@int4``, transformers' ``model.generate``;
  whether the torch runner's greedy tokens are identical to ``model.generate``'s, and how
  many of 6 greedy answers (64 tokens) int4 gives exactly as fp32;
- ``chat``: per engine (llama.cpp and torch workers), a ~1,000-token prompt with a
  300-token answer, its second turn (cached prompt tokens), and 4 requests at once;
- ``concurrency``: per engine, 1 / 4 / 8 requests at once, aggregate tok/s. Equally warm:
  every round gets fresh prompts of about the same length (a round tag at the start of the user
  message), after one warm-up request caches the shared system prompt, so no round reuses
  another round's prompt (``warmth`` in the JSON says so);
- ``ask``: worker cold start (spawn -> ready), ``starchat ask`` spawned against the running
  worker (spawn -> first answer byte), the worker's peak RSS;
- ``prefill_by_type``: raw llama.cpp prefill of the same ~1,000-token prompt on re-quantized
  copies of the default file (Q4_1 as shipped, Q4_0, Q8_0, F16), and n_ubatch / threads on
  the shipped file;
- ``quality`` (slow; ``--skip-quality`` leaves it out): answers that loop over the 103
  prompts of ``training/data/code_eval_prompts.jsonl`` and HumanEval pass@1 (164 problems,
  greedy, ``training.evaluation.humaneval``), each with DRY off (``dry_off``), DRY from the
  first token over the last 64 tokens (``dry_from_start``, the earlier default) and the
  default, DRY once the answer repeats itself (``dry_on``, ``model.runtime.repetition``);
  with ``--torch-loops`` also the loop count on the torch engine, off and on (``loops_torch``);
- ``big`` (``--big``): a synthetic GGUF with Qwen2.5-1.5B's shapes (Q4_0, random weights)
  through ``starchat ask --model FILE`` and its worker: RSS over file size (target <= 2.5),
  decode vs ``xllamacpp`` alone on the file (target >= 0.9).

Medians over ``--repeats``; the load average at start and end shows whether the machine
was quiet. Every worker, server and temp file is gone when the script ends.

    python benchmarks/bench_model.py [--quick] [--limit N] [--skip-quality] [--torch-loops] [--big]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from benchmarks.common import median, summary  # noqa: E402

QUESTION = "Write a Python function that reverses a string."
LONG_ANSWER = "Count from 1 to 400, writing each number in words on its own line."
CODE = (ROOT / "model" / "prompt" / "budget.py").read_text()
TORCH = {"STARCHAT_ENGINE": "torch"}
ENGINES = {"llama.cpp": {}, "torch": TORCH}
TASKS = ["checks if a number is prime", "reverses a linked list", "debounces another function",
         "merges two sorted lists", "parses a CSV line", "flattens a nested list",
         "counts words in a text", "computes a moving average"]
WARMTH = ("fresh prompts per round: each request's user message starts with its own round "
          "and request tag (prompts within a few tokens of each other), after one warm-up "
          "request cached the shared system prompt; no round reuses another's prompt")


def log(message: str) -> None:
    print(f"[bench_model {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def system_messages(user: str) -> list[dict]:
    from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT

    return [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def chat_prompt(tokenizer, n_tokens: int = 1000) -> list[dict]:
    """A ~``n_tokens`` chat prompt: our own source code to explain."""
    text = CODE
    while len(tokenizer(text)["input_ids"]) < n_tokens - 60:
        text += "\n" + CODE
    ids = tokenizer(text)["input_ids"][: n_tokens - 60]
    return system_messages("Explain this code:\n" + tokenizer.decode(ids))


# --- decode of every engine -----------------------------------------------------------------

def worker_vs_raw(path: Path, file: Path, threads: int, tokens: int, repeats: int) -> dict:
    """Decode through our worker vs ``xllamacpp`` alone on ``file`` (same threads, same
    request body), alternated so load on the machine hits both alike."""
    from model.prompt.params import GenerationParams
    from model.runtime import llamacpp_engine

    messages = system_messages(LONG_ANSWER)
    engine = llamacpp_engine.load(file, slots=1)  # for the request body only
    # the body of the worker's first request: DRY only once the answer repeats itself
    body = engine.request_body(engine.chat_format.encode(messages), GenerationParams(max_new_tokens=tokens),
                               dry=not engine.dry_after_repeat)
    del engine
    request = {"messages": messages, "params": {"max_new_tokens": tokens}}
    rounds = []
    with common.raw_server(file, threads) as raw:
        for _ in range(repeats):
            rounds.append({"worker": common.worker_decode(path, request), "raw": common.raw_decode(raw, body)})
    w = median([r["worker"]["tok_per_s"] for r in rounds], 1)
    r = median([r["raw"]["tok_per_s"] for r in rounds], 1)
    return {"worker_llamacpp_tok_s": w, "raw_xllamacpp_tok_s": r,
            "worker_over_raw": round(w / r, 3) if r else None, "tokens": tokens, "rounds": rounds}


def torch_decode_rate(engine, repeats: int, tokens: int) -> tuple[float | None, list[int]]:
    rates, generated = [], []
    for _ in range(repeats):
        s = engine.generate(system_messages(QUESTION), {"max_new_tokens": tokens})
        list(s)
        rates.append(s.usage["tok_per_s"])
        generated = list(s.decoder.generated)
    return median(rates, 1), generated


def generate_rate(loaded, ids: list[int], repeats: int, tokens: int) -> tuple[float | None, list[int]]:
    """transformers' ``model.generate``, greedy: decode tok/s (prefill subtracted) and tokens."""
    import torch

    rates, out = [], []
    model = loaded.model
    for _ in range(repeats):
        with torch.inference_mode():
            inp = torch.tensor([ids], device=loaded.device)
            model.generate(inp, max_new_tokens=1, do_sample=False)  # warm
            t0 = time.perf_counter()
            model.generate(inp, max_new_tokens=1, do_sample=False)
            prefill = time.perf_counter() - t0
            t0 = time.perf_counter()
            g = model.generate(inp, max_new_tokens=tokens, do_sample=False, min_new_tokens=tokens)
            total = time.perf_counter() - t0
        rates.append((g.shape[1] - len(ids) - 1) / max(1e-9, total - prefill))
    with torch.inference_mode():  # the greedy answer as generate gives it (may stop at eos)
        out = model.generate(torch.tensor([ids], device=loaded.device), max_new_tokens=tokens, do_sample=False)
    return median(rates, 1), out[0, len(ids):].tolist()


AGREEMENT_PROMPTS = [
    "Write a Python function that reverses a string.",
    "Explain what a mutex is, briefly.",
    "Fix this code:\n```python\ndef mean(xs):\n    return sum(xs) / len(xs) + 1\n```",
    "Write a SQL query that counts orders per customer.",
    "What does `git rebase` do?",
    "Write a JavaScript function that debounces another function.",
]


def int4_agreement(fp32, int4, tokens: int = 64) -> dict:
    """How often int4 gives fp32's greedy answer (``tokens`` long), and where they part."""
    same, diverge = 0, []
    for q in AGREEMENT_PROMPTS:
        a, b = fp32.generate(system_messages(q), {"max_new_tokens": tokens}), int4.generate(system_messages(q), {"max_new_tokens": tokens})
        list(a), list(b)
        ga, gb = a.decoder.generated, b.decoder.generated
        same += ga == gb
        diverge.append(next((i for i, (x, y) in enumerate(zip(ga, gb, strict=False)) if x != y), min(len(ga), len(gb))))
    return {"int4_identical_answers": f"{same}/{len(AGREEMENT_PROMPTS)}", "int4_answer_tokens": tokens,
            "int4_first_divergence_tokens": diverge}


def decode_torch(tokens: int, repeats: int, agreement_tokens: int) -> dict:
    """Our torch runner fp32 and int4, and transformers' generate, in this process."""
    from model.runtime.engine import Engine
    from model.runtime.loading import load_model

    fp32 = Engine(load_model("default"))
    out: dict = {}
    out["torch_runner_fp32_tok_s"], ours = torch_decode_rate(fp32, repeats, tokens)
    hf = load_model("default", runner="transformers")
    ids = fp32.chat_format.encode(system_messages(QUESTION))
    out["transformers_generate_tok_s"], theirs = generate_rate(hf, ids, repeats, tokens)
    eos = set(fp32.eos_ids) | set(fp32.chat_format.stop_token_ids)
    ours, theirs = [t for t in ours if t not in eos], [t for t in theirs if t not in eos]
    out["torch_runner_vs_generate_identical_greedy"] = ours == theirs
    out["greedy_tokens_compared"] = [len(ours), len(theirs)]
    out["torch_runner_over_generate"] = (round(out["torch_runner_fp32_tok_s"] / out["transformers_generate_tok_s"], 3)
                                         if out["transformers_generate_tok_s"] else None)
    del hf
    int4 = Engine(load_model("default@int4"))
    out["torch_int4_tok_s"], _ = torch_decode_rate(int4, repeats, tokens)
    out.update(int4_agreement(fp32, int4, agreement_tokens))
    return out


# --- chat turns, bursts, concurrency (per engine, through a worker) -------------------------

def chat_figures(path: Path, tokenizer, answer_tokens: int) -> dict:
    chat = chat_prompt(tokenizer)
    answer, first = common.turn(path, chat, answer_tokens)
    _, second = common.turn(path, [*chat, {"role": "assistant", "content": answer},
                                   {"role": "user", "content": "Which part would you simplify?"}], answer_tokens)
    burst = common.concurrent(path, [{"messages": system_messages(f"Write a Python function number {i} that sorts a list."),
                                      "params": {"max_new_tokens": answer_tokens}} for i in range(4)])
    return {"first_turn": first, "second_turn": second, "burst_4": burst}


def concurrency_figures(path: Path, tokens: int) -> dict:
    common.turn(path, system_messages("Hi."), 2)  # caches the shared system prompt for all rounds
    out: dict = {"warmth": WARMTH, "max_new_tokens": tokens}
    for n in (1, 4, 8):
        requests = [{"messages": system_messages(f"[round {n} request {i}] Write a Python function that {TASKS[i % 8]}."),
                     "params": {"max_new_tokens": tokens, "stop": ["\x00never"]}} for i in range(n)]
        out[f"aggregate_tok_s@{n}"] = common.concurrent(path, requests)["aggregate_tok_per_s"]
    for n in (4, 8):
        base = out["aggregate_tok_s@1"]
        out[f"speedup@{n}"] = round(out[f"aggregate_tok_s@{n}"] / base, 2) if base else None
    return out


# --- `starchat ask`, cold start, RSS ----------------------------------------------------------

def ask_figures(spec: str, runtime: Path, runs: int) -> dict:
    from model.runtime.spec import ModelSpec
    from model.serving import protocol

    env = dict(os.environ, STARCHAT_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1")
    out = {"worker_cold_start_s": summary([common.cold_start(spec, runtime) for _ in range(max(3, runs))])}
    path = protocol.socket_path_for(ModelSpec.parse(spec))
    _, pid = common.start_worker(spec, path)
    common.one_ask(spec, QUESTION, env)  # the worker's first prefill of the question, not counted
    asks = [common.one_ask(spec, QUESTION, env) for _ in range(runs)]
    out["ask_spawn_to_first_byte_s"] = summary([a["first_byte_s"] for a in asks])
    out["ask_spawn_to_exit_s"] = summary([a["exit_s"] for a in asks])
    out["ask_imports_torch"] = any(a["torch"] for a in asks)
    out["ask_engine"] = asks[-1]["stats"].get("engine")
    out["worker_memory_after_ask"] = common.proc_memory_mib(pid)
    common.stop_pids([pid])
    return out


# --- prefill by quantization type -------------------------------------------------------------

def prefill_by_type(threads: int, prompt_ids: list[int], tmp: Path, quick: bool) -> dict:
    from model.runtime.spec import default_gguf_path

    shipped = default_gguf_path()
    runs = 1 if quick else 2
    out: dict = {"prompt_tokens": len(prompt_ids), "threads": threads, "unit": f"prefill_s (llama.cpp prompt_ms / 1000, best of {runs}, no cache)"}
    files = {"Q4_1 (shipped)": shipped}
    for qtype in ("Q4_0",) if quick else ("Q4_0", "Q8_0", "F16"):
        t = time.perf_counter()
        files[qtype] = common.requantize_gguf(shipped, tmp / f"default-{qtype}.gguf", qtype)
        log(f"wrote {qtype} copy in {time.perf_counter() - t:.1f} s")
    by_type = {}
    for name, file in files.items():
        with common.raw_server(file, threads, slots=1, ubatch=512, batch=2048) as raw:
            by_type[name] = {"prefill_s": common.raw_prefill_s(raw, prompt_ids, runs), "file_mib": round(file.stat().st_size / 2**20, 1)}
    out["by_type_ubatch512"] = by_type
    sweep = []
    for th, ub in [(threads, 128)] + ([] if quick else [(threads, 256), (1, 512)]):
        with common.raw_server(shipped, th, slots=1, ubatch=ub, batch=2048) as raw:
            sweep.append({"file": "Q4_1 (shipped)", "threads": th, "n_ubatch": ub, "prefill_s": common.raw_prefill_s(raw, prompt_ids, runs)})
    out["q4_1_sweep"] = sweep
    for file in files.values():
        if file != shipped:
            file.unlink()
    return out


# --- quality: loops and HumanEval, DRY off vs on ----------------------------------------------

def dry_settings() -> dict:
    """The settings compared: off, the earlier default (from the first token, llama.cpp's
    own sequence breakers, last 64 tokens) and the default (once the answer repeats itself)."""
    from model.runtime import llamacpp_engine
    from model.runtime.repetition import DRY_ALLOWED_LENGTH, DRY_BASE, DRY_MULTIPLIER

    from_start = {"dry_multiplier": DRY_MULTIPLIER, "dry_base": DRY_BASE, "dry_allowed_length": DRY_ALLOWED_LENGTH,
                  "dry_penalty_last_n": 64}
    return {"dry_off": {}, "dry_from_start": from_start, "dry_on": dict(llamacpp_engine.DEFAULT_DRY)}


def loop_share(engine, prompts: list[dict], max_new_tokens: int) -> dict:
    """Answers (greedy, the product's system prompt) in which one sentence or line repeats
    (``loop_share``), and, as a check blind to lines and sentences, those in which a run of
    eight words occurs three times (``eight_word_run_3x``). llama.cpp, each DRY setting."""
    from training.evaluation.backends import LlamaCppBackend

    out = {name: loops_of(LlamaCppBackend(engine=engine, dry=dry), prompts, max_new_tokens, name)
           for name, dry in dry_settings().items()}
    out["halved"] = out["dry_on"]["loop_share"] <= out["dry_off"]["loop_share"] / 2
    return out


def torch_loop_share(prompts: list[dict], max_new_tokens: int) -> dict:
    """The same on the torch engine (fp32), its repetition control off and on."""
    from training.evaluation.backends import EngineBackend

    backend = EngineBackend("default")
    out = {}
    for name, dry in (("dry_off", False), ("dry_on", True)):
        backend.engine.dry = dry
        out[name] = loops_of(backend, prompts, max_new_tokens, f"torch {name}")
    out["halved"] = out["dry_on"]["loop_share"] <= out["dry_off"]["loop_share"] / 2
    return out


def loops_of(backend, prompts: list[dict], max_new_tokens: int, name: str) -> dict:
    from benchmarks.common import repeated_runs, repeated_units

    looping, runs, chars = [], [], 0
    for row in prompts:
        text = backend.complete(system_messages(row["prompt"]), {"max_new_tokens": max_new_tokens, "temperature": 0.0}).text
        chars += len(text)
        if repeated_units(text):
            looping.append(row["id"])
        if repeated_runs(text):
            runs.append(row["id"])
    log(f"loops {name}: {len(looping)} of {len(prompts)}")
    return {"answers": len(prompts), "looping": len(looping), "loop_share": round(len(looping) / max(1, len(prompts)), 3),
            "looping_ids": looping, "mean_chars": round(chars / max(1, len(prompts))),
            "eight_word_run_3x": len(runs), "eight_word_run_3x_ids": runs}


def humaneval(engine, limit: int | None, max_new_tokens: int, tmp: Path) -> dict:
    from training.evaluation.backends import LlamaCppBackend
    from training.evaluation.humaneval import run_humaneval, score

    out = {}
    for name, dry in dry_settings().items():
        t = time.perf_counter()
        rows = run_humaneval(LlamaCppBackend(f"default ({name})", engine=engine, dry=dry), tmp / f"humaneval-{name}.jsonl",
                             limit=limit, max_new_tokens=max_new_tokens, progress=False)
        result = score(rows)
        out[name] = {"problems": result["problems"], "pass@1": result["pass@1"], "statuses": result["statuses"],
                     "wall_s": round(time.perf_counter() - t, 1)}
        log(f"humaneval {name}: pass@1 {result['pass@1']}")
    return out


def quality_figures(limit: int | None, max_new_tokens: int, tmp: Path, torch_loops: bool = False) -> dict:
    from benchmarks.common import LOOP_PROMPTS as PROMPTS
    from model.runtime import llamacpp_engine
    from model.runtime.spec import default_gguf_path

    prompts = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()][:limit]
    engine = llamacpp_engine.load(default_gguf_path(), slots=1)
    return {"loops": {"prompts_file": str(PROMPTS.relative_to(ROOT)), "max_new_tokens": max_new_tokens,
                      **loop_share(engine, prompts, max_new_tokens)},
            "humaneval_greedy": {"max_new_tokens": max_new_tokens, **humaneval(engine, limit, max_new_tokens, tmp)},
            **({"loops_torch": torch_loop_share(prompts, max_new_tokens)} if torch_loops else {})}


# --- a 1.5B-shaped file ------------------------------------------------------------------

def big_figures(threads: int, tokens: int, tmp: Path, runtime: Path) -> dict:
    from model.runtime.spec import ModelSpec
    from model.serving import protocol
    from tests.tiny_models import synthetic_gguf

    t = time.perf_counter()
    file = synthetic_gguf(tmp / "qwen2.5-1.5b-shapes-Q4_0.gguf")
    size = file.stat().st_size
    out: dict = {"shapes": "qwen2.5-1.5b (28 layers, hidden 1536, ffn 8960, 12/2 heads), vocab 49,152, random Q4_0",
                 "file_mib": round(size / 2**20, 1), "write_s": round(time.perf_counter() - t, 1)}
    log(f"wrote the synthetic file ({out['file_mib']} MiB)")
    spec = str(file)
    env = dict(os.environ, STARCHAT_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1")
    try:
        first = common.one_ask(spec, QUESTION, env, max_new_tokens=tokens)  # starts the worker too
        out["ask_with_worker_start_first_byte_s"] = round(first["first_byte_s"], 3)
        out["ask_warm_first_byte_s"] = round(common.one_ask(spec, QUESTION, env, max_new_tokens=8)["first_byte_s"], 3)
        path = protocol.socket_path_for(ModelSpec.parse(spec))
        pid = common.wait_ready(path)
        out.update(worker_vs_raw(path, file, threads, tokens, 2))
        mem = common.proc_memory_mib(pid)
        out.update({"worker_memory": mem, "worker_peak_rss_over_file": round(mem.get("peak_rss_mib", 0) * 2**20 / size, 2)})
    finally:
        common.stop_workers(runtime)
        file.unlink(missing_ok=True)
    return out


# --- the run -------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--answer-tokens", type=int, default=300, help="answer length of the chat turns")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 repeat, 16 decode / 32 answer tokens, fewer prefill files")
    parser.add_argument("--skip-quality", action="store_true", help="leave out loops and HumanEval (slow)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts / problems of the quality section")
    parser.add_argument("--quality-tokens", type=int, default=256,
                        help="answer length of the loop prompts and HumanEval (256, as `starchat eval humaneval`)")
    parser.add_argument("--big", action="store_true", help="also the 1.5B-shaped synthetic file")
    parser.add_argument("--torch-loops", action="store_true",
                        help="the quality section's loop count on the torch engine too (slow: fp32)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a stopped run still cleans up (finally below)
    if args.quick:
        args.repeats, args.decode_tokens, args.answer_tokens, args.quality_tokens = 1, 16, 32, 64

    from model.prompt.chat_format import chat_format_for
    from model.runtime import llamacpp_engine
    from model.runtime.loading import load_tokenizer
    from model.runtime.spec import default_gguf_path

    threads = llamacpp_engine.default_threads()
    result: dict = {"load_avg_start": common.load_avg(), "cpu_count": os.cpu_count(), "llamacpp_threads": threads,
                    "args": vars(args)}
    # nothing of the benchmark's may outlive it: workers, sockets, files
    with common.private_runtime("starchat-bench-model-") as (tmp, runtime):
        tokenizer = load_tokenizer("default")
        if not args.skip_quality:  # first: its figures do not depend on the load, the speeds after it do
            log("quality (slow)")
            result["quality"] = quality_figures(args.limit, args.quality_tokens, tmp, args.torch_loops)
        result["load_avg_speed_start"] = common.load_avg()
        log("ask and cold start")
        result["ask"] = ask_figures("default", runtime, 3 if args.quick else 7)
        paths = {}
        for name, env in ENGINES.items():  # one worker per engine, each on its own socket
            paths[name] = runtime / f"bench-{name}.sock"
            result.setdefault("worker_cold_start_s_by_engine", {})[name] = round(common.start_worker("default", paths[name], env)[0], 2)
        log("decode")
        result["decode"] = worker_vs_raw(paths["llama.cpp"], default_gguf_path(), threads, args.decode_tokens,
                                         max(2, args.repeats))
        result["decode"].update(decode_torch(args.decode_tokens, args.repeats, 16 if args.quick else 64))
        for name, path in paths.items():
            log(f"chat and concurrency on {name}")
            result.setdefault("chat", {})[name] = chat_figures(path, tokenizer, args.answer_tokens)
            result.setdefault("concurrency", {})[name] = concurrency_figures(path, args.decode_tokens)
            result.setdefault("worker_memory_by_engine", {})[name] = common.proc_memory_mib(common.worker_pid(path))
        common.stop_workers(runtime)
        log("prefill by type")
        prompt_ids = chat_format_for(tokenizer).encode(chat_prompt(tokenizer))
        result["prefill_by_type"] = prefill_by_type(threads, prompt_ids, tmp, args.quick)
        if args.big:
            log("big")
            result["big"] = big_figures(threads, args.decode_tokens, tmp, runtime)
    result["load_avg_end"] = common.load_avg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
