"""Pieces the benchmark scripts share: workers, raw llama.cpp, timing, memory, GGUF copies.

Everything here starts real processes or real servers; whoever starts one stops it
(``stop_workers`` for a runtime dir, ``raw_server`` as a context manager).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --- numbers ------------------------------------------------------------------------------

def median(values: list[float], digits: int = 3) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), digits) if values else None


def summary(values: list[float], digits: int = 3) -> dict:
    """Median, min, max and count of repeated measurements."""
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "runs": 0}
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "runs": len(values)}


def load_avg() -> list[float]:
    """The 1/5/15-minute load averages (a reader sees whether the machine was quiet)."""
    return [round(x, 2) for x in os.getloadavg()]


def proc_memory_mib(pid: int) -> dict:
    """A process's resident memory now and at its peak (Linux /proc), in MiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
          if line.startswith(("VmRSS", "VmHWM"))}
    return {"rss_mib": round(kb.get("VmRSS", 0) / 1024, 1), "peak_rss_mib": round(kb.get("VmHWM", 0) / 1024, 1)}


# --- workers ------------------------------------------------------------------------------

def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not reaped, counts as gone)."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reaps it if it is our child
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def worker_pid(socket_path: Path) -> int | None:
    from model.serving.client import WorkerClient

    try:
        with WorkerClient(socket_path=socket_path, autostart=False) as client:
            return int(client.info()["pid"])
    except Exception:  # noqa: BLE001 - nothing listens there (any more)
        return None


def stop_pids(pids: list[int], grace_s: float = 15) -> None:
    """SIGTERM, wait until gone, SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (pids := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop_workers(runtime: Path) -> None:
    """Stop every worker listening in ``runtime`` (they outlive their clients by design)."""
    stop_pids([p for sock in Path(runtime).glob("*.sock") if (p := worker_pid(sock))])


def wait_ready(socket_path: Path, limit_s: float = 600) -> int:
    """Wait until the worker on ``socket_path`` has its model loaded; returns its pid."""
    from model.serving.client import WorkerClient

    deadline = time.monotonic() + limit_s
    with WorkerClient(socket_path=socket_path, autostart=False) as client:
        while not (info := client.info()).get("ready"):
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not get ready in time")
            time.sleep(0.02)
    return int(info["pid"])


def start_worker(spec: str, socket_path: Path, env: dict | None = None) -> tuple[float, int]:
    """Spawn a worker for ``spec`` (with ``env`` overrides, e.g. STARCHAT_ENGINE=torch) and
    wait until ready: (seconds from spawn to ready, pid)."""
    from model.serving.client import ensure_worker

    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        t = time.perf_counter()
        ensure_worker(spec, socket_path)
        pid = wait_ready(socket_path)
        return time.perf_counter() - t, pid
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cold_start(spec: str, runtime: Path, env: dict | None = None) -> float:
    """One fresh worker, spawn -> ready, then stopped."""
    path = Path(runtime) / f"cold-{time.monotonic_ns()}.sock"
    elapsed, pid = start_worker(spec, path, env)
    stop_pids([pid])
    return elapsed


# --- streaming rates ----------------------------------------------------------------------

def stream_rate(run: Callable[[Callable[[str], None]], None]) -> dict:
    """Client-side rates of one streamed request: ``run(on_text)`` blocks till done.

    Decode rate = pieces after the first over the time since the first.
    """
    stamps: list[float] = []
    t0 = time.perf_counter()
    run(lambda _text: stamps.append(time.perf_counter()))
    if len(stamps) < 2:
        return {"tokens": len(stamps), "tok_per_s": 0.0}
    return {"tokens": len(stamps), "ttft_s": round(stamps[0] - t0, 3),
            "tok_per_s": round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 1)}


def worker_events(path: Path, request: dict) -> Iterator[dict]:
    from model.serving.client import WorkerClient

    with WorkerClient(socket_path=path, autostart=False) as c:
        yield from c.generate(request)


def worker_decode(path: Path, request: dict) -> dict:
    def run(on_text):
        for e in worker_events(path, request):
            if e["type"] == "delta":
                on_text(e["text"])
    return stream_rate(run)


def turn(path: Path, messages: list[dict], max_new: int) -> tuple[str, dict]:
    """One chat turn through a worker: its answer and timings (client side + usage)."""
    parts, t0, first, done = [], time.perf_counter(), None, {}
    for e in worker_events(path, {"messages": messages, "params": {"max_new_tokens": max_new}}):
        if e["type"] == "delta":
            first = first or time.perf_counter()
            parts.append(e["text"])
        elif e["type"] in ("done", "error"):
            done = e
    u = done.get("usage", {})
    return "".join(parts), {"ttft_s": round((first or t0) - t0, 3), "total_s": round(time.perf_counter() - t0, 2),
                            "prompt_tokens": u.get("prompt_tokens"),
                            "cached_prompt_tokens": u.get("cached_prompt_tokens"), "tokens": u.get("tokens")}


def concurrent(path: Path, requests: list[dict]) -> dict:
    """All ``requests`` at once through one worker: aggregate tokens over the wall time."""
    counts = [0] * len(requests)

    def one(i: int) -> None:
        for e in worker_events(path, requests[i]):
            if e["type"] == "done":
                counts[i] = e["usage"]["tokens"]
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    return {"requests": len(requests), "tokens": sum(counts), "wall_s": round(wall, 2),
            "aggregate_tok_per_s": round(sum(counts) / wall, 1) if wall else None}


# --- a benchmark's private runtime folder ------------------------------------------------

@contextlib.contextmanager
def private_runtime(prefix: str) -> Iterator[tuple[Path, Path]]:
    """(a temp folder, a 0700 runtime folder in it) with STARCHAT_RUNTIME_DIR pointing there;
    afterwards every worker started in it is stopped, the folder removed and the variable
    restored: nothing of the benchmark's outlives it."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    runtime = tmp / "run"
    runtime.mkdir(mode=0o700)
    saved = os.environ.get("STARCHAT_RUNTIME_DIR")
    os.environ["STARCHAT_RUNTIME_DIR"] = str(runtime)
    try:
        yield tmp, runtime
    finally:
        stop_workers(runtime)
        shutil.rmtree(tmp, ignore_errors=True)
        if saved is None:
            os.environ.pop("STARCHAT_RUNTIME_DIR", None)
        else:
            os.environ["STARCHAT_RUNTIME_DIR"] = saved


# --- llama.cpp alone ----------------------------------------------------------------------

@contextlib.contextmanager
def raw_server(model_path: Path, threads: int, slots: int = 4, ubatch: int | None = None,
               batch: int | None = None, n_ctx: int = 8192) -> Iterator:
    """``xllamacpp`` alone in this process (no worker, no our code), listening on a private
    unix socket that is removed afterwards."""
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = str(model_path)
    p.n_ctx, p.n_parallel, p.kv_unified = n_ctx, slots, True
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
    p.verbosity = -1
    if ubatch:
        p.n_ubatch = ubatch
    if batch:
        p.n_batch = batch
    d = tempfile.mkdtemp(prefix="starchat-raw-")
    p.hostnames = [os.path.join(d, "s.sock")]
    server = xllamacpp.Server(p)
    try:
        yield server
    finally:
        del server
        shutil.rmtree(d, ignore_errors=True)


def raw_decode(server, body: dict) -> dict:
    """One streamed completion on a raw server, rates as ``stream_rate`` counts them."""
    def run(on_text):
        def cb(chunk):
            for c in chunk.get("choices") or ():
                if c.get("text"):
                    on_text(c["text"])
            return False
        server.handle_completions(dict(body), cb)
    return stream_rate(run)


def raw_prefill_s(server, prompt_ids: list[int], runs: int = 2) -> float:
    """llama.cpp's own prompt time for ``prompt_ids`` (no cache), best of ``runs``."""
    times = []
    for _ in range(runs):
        res = server.handle_completions({"prompt": prompt_ids, "n_predict": 1, "cache_prompt": False})
        times.append(res.get("timings", {}).get("prompt_ms", 0.0) / 1000)
    return round(min(times), 3)


# --- `starchat ask` as a user runs it ---------------------------------------------------

# Runs the real CLI entry point, then reports whether torch was imported on the way.
ASK_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nTORCH_IMPORTED=%s\\n' % ('torch' in sys.modules)))\n"
    "from lsp_server.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def one_ask(model: str, question: str, env: dict, max_new_tokens: int = 8) -> dict:
    """A new ``starchat ask`` process: spawn -> first stdout byte, -> exit, its own stats."""
    argv = [sys.executable, "-c", ASK_PROBE, "ask", question, "--model", model,
            "--max-new-tokens", str(max_new_tokens), "--stats"]
    spawned = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=ROOT, bufsize=0)
    assert proc.stdout is not None
    try:
        first = proc.stdout.read(1)
        first_byte = time.perf_counter() - spawned
        _rest, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    total = time.perf_counter() - spawned
    if proc.returncode != 0 or not first:
        raise SystemExit(f"starchat ask failed ({proc.returncode}): {err.decode()[-500:]}")
    stats = next((json.loads(line) for line in err.decode().splitlines() if line.startswith("{")), {})
    return {"first_byte_s": first_byte, "exit_s": total, "ttft_s": stats.get("ttft_s"),
            "torch": "TORCH_IMPORTED=True" in err.decode(), "stats": stats}


# --- GGUF copies --------------------------------------------------------------------------

def requantize_gguf(src: Path, dst: Path, qtype: str) -> Path:
    """Copy ``src`` with every quantized tensor re-quantized to ``qtype`` (Q4_0, Q8_0, F16);
    metadata (tokenizer, chat template, shapes) is copied as is, F32 tensors too."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst), arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        is_array = field.types[0] == gguf.GGUFValueType.ARRAY
        writer.add_key_value(name, field.contents(), field.types[0],
                             sub_type=field.types[-1] if is_array else None)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if qtype == "F16" else gguf.LlamaFileType[f"MOSTLY_{qtype}"])
    target = gguf.GGMLQuantizationType[qtype]
    for t in reader.tensors:
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        if qtype == "F16":
            writer.add_tensor(t.name, values.astype(np.float16))
        else:
            writer.add_tensor(t.name, gguf.quants.quantize(values, target), raw_dtype=target)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


# --- answers that loop ----------------------------------------------------------------------
# (a unit is what the default's repetition control watches: a line or sentence of MIN_CHARS+)
from model.runtime.repetition import MIN_CHARS, SENTENCE_END  # noqa: E402  (no torch)

LOOP_PROMPTS = ROOT / "training" / "data" / "code_eval_prompts.jsonl"


def repeated_units(text: str) -> list[str]:
    """Sentences or lines of ``text`` (at least ``MIN_CHARS`` characters, whitespace
    collapsed) that occur three or more times: the answer loops."""
    units: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if len(line) < MIN_CHARS:
            continue
        pieces = [p for p in SENTENCE_END.split(line) if len(p) >= MIN_CHARS]
        units += pieces if len(pieces) > 1 else [line]
    return [u for u, n in Counter(units).items() if n >= 3]


def repeated_runs(text: str, words: int = 8) -> list[str]:
    """Runs of ``words`` words (whitespace-split, so across lines and sentences) that occur
    three or more times without overlapping: a second loop measure, blind to how the answer
    is cut into lines and sentences (the default's repetition control watches those)."""
    tokens = text.split()
    seen: dict[tuple[str, ...], list[int]] = {}
    for at in range(len(tokens) - words + 1):
        run = tuple(tokens[at:at + words])
        starts = seen.setdefault(run, [])
        if not starts or at - starts[-1] >= words:
            starts.append(at)
    return [" ".join(run) for run, starts in seen.items() if len(starts) >= 3]
