"""`starchat ask` as a user runs it: a new process, from spawn to the first answer byte.

A user's `starchat ask` pays interpreter start, imports, the socket connect and the
prompt; the worker (already running, as it is after the first use) pays the prefill.
This script measures exactly that, with a real process per run:

- `ask_spawn_to_first_byte_s`: `Popen` of `starchat ask QUESTION` -> first byte on its stdout;
- `ask_spawn_to_exit_s`: the same process until it exits (answer of --max-new-tokens);
- `ask_reported_ttft_s`: what `--stats` itself reports (from its request to the first delta);
- `ask_imports_torch`: whether the process had `torch` in `sys.modules` at exit;
- `worker_cold_start_s`: a fresh worker process, spawn -> ready (`info()["ready"]`).

Medians over --runs, plus min/max. The worker lives in a private runtime dir and is
stopped at the end; nothing is left behind.

    python benchmarks/bench_ask.py [--model default] [--runs 7] [--max-new-tokens 8]
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

from model.serving.client import WorkerClient, ensure_worker  # noqa: E402

QUESTION = "Write a Python function that reverses a string."
# Runs the real CLI entry point, then reports whether torch was imported on the way.
ASK_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nTORCH_IMPORTED=%s\\n' % ('torch' in sys.modules)))\n"
    "from lsp_server.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "runs": len(values)}


def wait_ready(socket_path: Path, limit_s: float = 300) -> float:
    """Start a worker on ``socket_path`` and wait until its model is loaded."""
    start = time.perf_counter()
    deadline = time.monotonic() + limit_s
    with WorkerClient(socket_path=socket_path, autostart=False) as client:
        while not client.info().get("ready"):
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not get ready in time")
            time.sleep(0.02)
    return time.perf_counter() - start


def stop_worker(socket_path: Path) -> None:
    try:
        with WorkerClient(socket_path=socket_path, autostart=False) as client:
            pid = client.info()["pid"]
    except Exception:  # noqa: BLE001 - nothing listens there (any more)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def cold_start(model: str, runtime: Path) -> float:
    path = runtime / f"cold-{time.monotonic_ns()}.sock"
    spawned = time.perf_counter()
    ensure_worker(model, path)
    wait_ready(path)
    elapsed = time.perf_counter() - spawned
    stop_worker(path)
    return elapsed


def one_ask(model: str, env: dict, max_new_tokens: int) -> dict:
    argv = [sys.executable, "-c", ASK_PROBE, "ask", QUESTION, "--model", model,
            "--max-new-tokens", str(max_new_tokens), "--stats"]
    spawned = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=ROOT, bufsize=0)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    first_byte = time.perf_counter() - spawned
    rest, err = proc.communicate(timeout=300)
    total = time.perf_counter() - spawned
    if proc.returncode != 0 or not first:
        raise SystemExit(f"starchat ask failed ({proc.returncode}): {err.decode()[-500:]}")
    stats = next((json.loads(line) for line in err.decode().splitlines() if line.startswith("{")), {})
    return {"first_byte_s": first_byte, "exit_s": total, "ttft_s": stats.get("ttft_s"),
            "torch": "TORCH_IMPORTED=True" in err.decode(), "stats": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()

    result: dict = {"model": args.model, "cpu_count": os.cpu_count(), "question": QUESTION}
    with tempfile.TemporaryDirectory(prefix="starchat-bench-ask-") as tmp:
        runtime = Path(tmp) / "run"
        runtime.mkdir(mode=0o700)
        env = dict(os.environ, STARCHAT_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1")
        os.environ["STARCHAT_RUNTIME_DIR"] = str(runtime)
        result["worker_cold_start_s"] = summary([cold_start(args.model, runtime)
                                                 for _ in range(max(3, args.runs // 2))])
        from model.serving import protocol

        path = protocol.socket_path_for(args.model)
        ensure_worker(args.model, path)
        wait_ready(path)
        try:
            one_ask(args.model, env, args.max_new_tokens)  # the worker's first prefill, not counted
            runs = [one_ask(args.model, env, args.max_new_tokens) for _ in range(args.runs)]
        finally:
            for sock in runtime.glob("*.sock"):  # ours, and any the CLI might have started
                stop_worker(sock)
    result["ask_spawn_to_first_byte_s"] = summary([r["first_byte_s"] for r in runs])
    result["ask_spawn_to_exit_s"] = summary([r["exit_s"] for r in runs])
    result["ask_reported_ttft_s"] = summary([r["ttft_s"] for r in runs if r["ttft_s"] is not None])
    result["ask_imports_torch"] = any(r["torch"] for r in runs)
    result["engine"] = runs[-1]["stats"].get("engine") or runs[-1]["stats"].get("runner")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
