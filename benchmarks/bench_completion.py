"""Inline completion: quality on the standard library, latency while typing, cost to chat -> JSON.

1. Next-line completion over Python's standard library sources (code nobody here wrote):
   a seeded sample of positions, each the start of a non-blank line; the model completes
   from the text before (and, for FIM models, after) that line; the first line of the
   post-processed answer is compared with the real line: exact match (trailing whitespace
   ignored) and mean edit similarity (1 - Levenshtein / longer length).
2. A replay through ``starchat lsp`` over stdio: a stdlib function typed at 80 ms per
   keystroke, an automatic ``textDocument/inlineCompletion`` after every keystroke (as VS
   Code asks), a pause at each line end (600 ms) and, seeded, after 30% of the word
   boundaries inside a line (500 ms: a typist looking at the suggestion). Reported: the
   share answered / null (superseded or stale) / cancelled, the number of non-null answers
   that arrived for a document version older than the editor's (must be 0), and latency
   from request to response: of the answered automatic single-line (mid-line) completions
   (the headline, ``single_line_latency_ms_p50/p95``), of answered line-start (block)
   completions, and of all requests (a superseded request's quick ``null`` included).
3. Chat decode speed in the worker (the engine's own decode tok/s of one 128-token answer)
   alone, and again while a typing replay requests completions: the function of part 2
   typed at 80 ms per keystroke, an automatic completion after each keystroke (the next
   one after the previous answer, from the text typed by then); the ratio of the two
   (target >= 0.85).

    python benchmarks/bench_completion.py [--model SPEC] [--positions 300] [--seed 0]
        [--context-tokens 1024] [--skip quality,replay,chat]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.serving.client import WorkerClient, ensure_worker  # noqa: E402
from training.evaluation.repo_eval import complete as complete_request  # noqa: E402
from training.evaluation.repo_eval import first_line_shown, similarity  # noqa: E402


def stdlib_positions(n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(path, prefix, suffix, real line) at the start of non-blank lines of stdlib modules."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in lib.rglob("*.py")  # library code, not its tests or third-party packages
                   if "site-packages" not in p.parts and not any("test" in part for part in p.parts))
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        path = rng.choice(files)
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except (UnicodeDecodeError, OSError):
            continue
        candidates = [i for i in range(5, len(lines)) if lines[i].strip() and len(lines[i].strip()) > 3]
        if not candidates:
            continue
        i = rng.choice(candidates)
        prefix = "\n".join(lines[:i]) + "\n"
        suffix = "\n".join(lines[i + 1 :])
        out.append((str(path.relative_to(lib)), prefix, suffix, lines[i]))
    return out


def complete(client: WorkerClient, prefix: str, suffix: str, path: str, context_tokens: int,
             max_new_tokens: int = 48) -> str:
    request = {"fim": {"prefix": prefix[-context_tokens * 8 :], "suffix": suffix[: context_tokens * 8],
                       "path": path, "context_tokens": context_tokens},
               "params": {"max_new_tokens": max_new_tokens, "temperature": 0.0, "stop": ["\n\n"]}}
    return complete_request(client, request)


def bench_quality(socket: Path, n: int, seed: int, context_tokens: int) -> dict:
    exact, sims, started = 0, [], time.perf_counter()
    with WorkerClient(socket_path=socket, autostart=False) as client:
        for k, (path, prefix, suffix, real) in enumerate(stdlib_positions(n, seed)):
            if k and k % 25 == 0:
                progress(f"quality: {k}/{n} positions, exact {exact}")
            raw = complete(client, prefix, suffix, path, context_tokens)
            guess = first_line_shown(raw, suffix)
            exact += guess.rstrip() == real.rstrip()
            sims.append(similarity(guess.rstrip(), real.rstrip()))
    return {"positions": n, "seed": seed, "context_tokens": context_tokens,
            "exact_match": round(exact / n, 4), "edit_similarity": round(statistics.mean(sims), 4),
            "seconds": round(time.perf_counter() - started, 1)}


class LspClient:
    """A minimal JSON-RPC client over a server's stdio (what an editor does)."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.pending: dict[int, asyncio.Future] = {}
        self.next_id = 0
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            header = await self.proc.stdout.readuntil(b"\r\n\r\n")
            length = int(header.split(b"Content-Length:")[1].split(b"\r\n")[0])
            body = json.loads(await self.proc.stdout.readexactly(length))
            if "id" in body and ("result" in body or "error" in body):
                future = self.pending.pop(body["id"], None)
                if future is not None and not future.done():
                    future.set_result(body)
            elif "id" in body and "method" in body:  # a server request: answer null
                self._write({"jsonrpc": "2.0", "id": body["id"], "result": None})

    def _write(self, message: dict) -> None:
        data = json.dumps(message).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)

    def request(self, method: str, params: dict) -> asyncio.Future:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        self._write({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return future

    def notify(self, method: str, params: dict) -> None:
        self._write({"jsonrpc": "2.0", "method": method, "params": params})


def replay_text() -> tuple[str, str]:
    """A real file from the standard library: textwrap.py up to ``def dedent(`` is already
    there (~3,500 tokens, so the 1,024-token window is full and its cut must stay put while
    typing), and the function ``dedent`` (comment lines left out) is typed at its end."""
    source = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
    start = source.index("def dedent(")
    end = source.index("\ndef ", start + 1)
    body = "\n".join(line for line in source[start:end].split("\n") if not line.lstrip().startswith("#"))
    return source[:start], body.rstrip() + "\n"


def progress(message: str) -> None:
    print(f"[bench_completion] {message}", file=sys.stderr, flush=True)  # noqa: T201


WORD_PAUSE_S = 0.5
WORD_PAUSE_SHARE = 0.3


async def bench_replay(env: dict, spec: str, context_tokens: int, keystroke_s: float, pause_s: float,
                       max_chars: int = 0, seed: int = 0) -> dict:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lsp_server", "lsp", env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    client = LspClient(proc)
    tmp = Path(env["STARCHAT_DATA_DIR"])
    uri = (tmp / "typed.py").as_uri()
    settings = {"starchat": {"model": spec, "completion": {"contextTokens": context_tokens}}}
    await client.request("initialize", {"processId": os.getpid(), "rootUri": tmp.as_uri(),
                                        "capabilities": {}, "initializationOptions": settings})
    client.notify("initialized", {})
    header, text = replay_text()
    if max_chars:
        text = text[:max_chars]
    version = 1
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                            "version": 1, "text": header}})
    # Warm up: the first answer waits for the model to load.
    await client.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": {"line": header.count("\n"), "character": 0},
        "context": {"triggerKind": 1}})
    results: list[dict] = []
    current = {"version": version}
    line, col = header.count("\n"), 0

    rng = random.Random(seed)

    async def ask(at_version: int, position: dict, mid_line: bool) -> None:
        sent = time.perf_counter()
        answer = await client.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": position, "context": {"triggerKind": 2}})
        results.append({"latency": time.perf_counter() - sent, "version": at_version, "mid_line": mid_line,
                        "version_at_answer": current["version"],
                        "answered": bool(answer.get("result")),
                        "cancelled": answer.get("error", {}).get("code") == -32800})

    tasks = []
    for ch in text:
        version += 1
        current["version"] = version
        client.notify("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": version},
            "contentChanges": [{"range": {"start": {"line": line, "character": col},
                                          "end": {"line": line, "character": col}}, "text": ch}]})
        if ch == "\n":
            line, col = line + 1, 0
        else:
            col += len(ch.encode("utf-16-le")) // 2
        tasks.append(asyncio.ensure_future(ask(version, {"line": line, "character": col}, ch != "\n")))
        pause = pause_s if ch == "\n" else 0.0
        if ch in " (.,=:" and rng.random() < WORD_PAUSE_SHARE:
            pause = WORD_PAUSE_S
        await asyncio.sleep(keystroke_s + pause)
    await asyncio.gather(*tasks)
    stats = await client.request("starchat/completionStats", {})
    served = [r for r in stats["result"]["served"] if r["version"] > 1]  # not the warm-up
    await client.request("shutdown", {})
    client.notify("exit", {})
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
    client.reader.cancel()

    latencies = sorted(r["latency"] for r in results)
    answered = [r for r in results if r["answered"]]
    single = sorted(r["latency"] for r in answered if r["mid_line"])
    block = sorted(r["latency"] for r in answered if not r["mid_line"])

    def pct(values: list[float], q: float) -> float | None:
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1) if values else None

    # How the server answered (starchat/completionStats): its own time per request, model
    # calls apart from answers served from the cache or from a prefetch.
    calls = [r for r in served if r["source"] == "model" and r["outcome"] in ("answered", "empty")]
    call_ms = sorted(r["ms"] / 1000 for r in calls)
    by_source = {k: sum(r["source"] == k for r in served) for k in ("cache", "prefetch", "model")}
    return {
        "model_calls": len(calls), "model_call_ms_p50": pct(call_ms, 0.5), "model_call_ms_p95": pct(call_ms, 0.95),
        "model_calls_cancelled_or_stale": sum(r["source"] == "model" and r["outcome"] in ("cancelled", "stale")
                                              for r in served),
        "served_by": by_source,
        "keystrokes": len(text), "keystroke_ms": keystroke_s * 1000, "line_end_pause_ms": pause_s * 1000,
        "context_tokens": context_tokens, "requests": len(results),
        "answered_share": round(len(answered) / len(results), 3),
        "null_share": round(sum(not r["answered"] and not r["cancelled"] for r in results) / len(results), 3),
        "cancelled_share": round(sum(r["cancelled"] for r in results) / len(results), 3),
        "word_pause_ms": WORD_PAUSE_S * 1000, "word_pause_share": WORD_PAUSE_SHARE,
        "single_line_answered": len(single),
        "single_line_latency_ms_p50": pct(single, 0.5), "single_line_latency_ms_p95": pct(single, 0.95),
        "line_start_answered": len(block),
        "line_start_latency_ms_p50": pct(block, 0.5), "line_start_latency_ms_p95": pct(block, 0.95),
        "all_requests_latency_ms_p50": pct(latencies, 0.5), "all_requests_latency_ms_p95": pct(latencies, 0.95),
        "stale_answers": (stale := sum(r["version_at_answer"] != r["version"] for r in answered)),
        "no_stale_answers": stale == 0,
    }


def bench_chat(socket: Path, context_tokens: int, keystroke_s: float = 0.08) -> dict:
    ask = {"messages": [{"role": "user", "content": "Write a Python function that parses an INI file "
                         "into a dict of dicts, with comments."}],
           "params": {"max_new_tokens": 128, "temperature": 0.0}}

    def chat() -> float:
        with WorkerClient(socket_path=socket, autostart=False) as client:
            for event in client.generate(ask):
                if event["type"] == "done":
                    return float(event["usage"]["tok_per_s"])
        raise RuntimeError("no done frame")

    chat()  # warm-up: both measurements below find the chat's prompt cached
    alone = statistics.median([chat(), chat()])
    stop = threading.Event()
    done_completions = [0]
    header, typed_text = replay_text()

    def typing() -> None:
        """The replay's typist: after each answer, a completion for the text typed by then."""
        started = time.perf_counter()
        with WorkerClient(socket_path=socket, autostart=False) as client:
            while not stop.is_set():
                typed = int((time.perf_counter() - started) / keystroke_s) % (len(typed_text) + 1)
                complete(client, header + typed_text[:typed], "", "typed.py", context_tokens,
                         max_new_tokens=16)
                done_completions[0] += 1
                time.sleep(keystroke_s)

    side = threading.Thread(target=typing, daemon=True)
    side.start()
    time.sleep(1.0)  # the typist is under way
    together = statistics.median([chat(), chat()])
    stop.set()
    side.join(timeout=120)
    return {"chat_tok_per_s_alone": alone, "chat_tok_per_s_while_typing": together,
            "ratio": round(together / alone, 3) if alone else None,
            "completions_meanwhile": done_completions[0], "keystroke_ms": keystroke_s * 1000,
            "drop_pct": round(100 * (alone - together) / alone, 1) if alone else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--positions", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--keystroke-ms", type=float, default=80)
    parser.add_argument("--line-pause-ms", type=float, default=600)
    parser.add_argument("--replay-chars", type=int, default=0, help="type only this many characters (0: all)")
    parser.add_argument("--skip", default="", help="comma-separated: quality, replay, chat")
    parser.add_argument("--worker-log", type=Path, help="keep the worker's log here (with STARCHAT_WORKER_LOG_LEVEL="
                        "DEBUG it has each completion's timings)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the worker is stopped below
    skip = set(filter(None, args.skip.split(",")))

    tmp = Path(tempfile.mkdtemp(prefix="bench-completion-"))
    (tmp / "run").mkdir(mode=0o700)
    (tmp / "data").mkdir()
    env = {**os.environ, "STARCHAT_RUNTIME_DIR": str(tmp / "run"), "STARCHAT_DATA_DIR": str(tmp / "data"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    os.environ.update(STARCHAT_RUNTIME_DIR=env["STARCHAT_RUNTIME_DIR"])
    out: dict = {"model": args.model, "cpu_count": os.cpu_count(),
                 "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
    socket = ensure_worker(args.model)
    try:
        with WorkerClient(socket_path=socket, autostart=False) as client:
            info = client.info()
            while not info.get("ready") and not info.get("load_error"):
                time.sleep(0.5)
                info = client.info()
        out["runner"] = info.get("runner")
        progress(f"worker ready: {info.get('runner')}")
        if "quality" not in skip:
            out["stdlib_next_line"] = bench_quality(socket, args.positions, args.seed, args.context_tokens)
            progress(f"quality: {out['stdlib_next_line']}")
        if "replay" not in skip:
            out["replay"] = asyncio.run(bench_replay(env, args.model, args.context_tokens,
                                                     args.keystroke_ms / 1000, args.line_pause_ms / 1000,
                                                     args.replay_chars, args.seed))
            progress(f"replay: {out['replay']}")
        if "chat" not in skip:
            out["chat_with_completions"] = bench_chat(socket, args.context_tokens, args.keystroke_ms / 1000)
    finally:
        try:
            with WorkerClient(socket_path=socket, autostart=False) as client:
                os.kill(int(client.info()["pid"]), signal.SIGTERM)
        except Exception:
            pass
        if args.worker_log:
            time.sleep(0.5)  # the worker's last lines
            shutil.copyfile(socket.with_suffix(".log"), args.worker_log)
        shutil.rmtree(tmp, ignore_errors=True)
    out["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
