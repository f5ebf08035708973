"""Why llama.cpp refused a GGUF file, in one sentence.

``xllamacpp.Server`` raises one ``RuntimeError`` for every failure ("Failed to init server,
please check the input params."); the reason is only in llama.cpp's own log, which the
worker keeps off (its per-request lines would bury ours). So when a load fails, ``explain``
runs the same load once more in a child process with llama.cpp's errors on (verbosity 1:
error lines only at load time), reads them, and ``classify`` turns them into a sentence:
out of memory, an architecture this build does not know, a truncated or damaged file, a
vocabulary that does not match the weights, or else llama.cpp's own first error line.
The child inherits the worker's limits (``RLIMIT_AS``), so memory failures reproduce.

Run as ``python -m model.runtime.llamacpp_errors FILE N_CTX SLOTS`` (what ``explain`` does).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXPLAIN_TIMEOUT = 120.0
_ERROR_LINE = re.compile(r"^\S+ E (?:\w+\s+)?(\w+): (.*)$")
_OUT_OF_MEMORY = ("insufficient memory", "failed to allocate", "out of memory", "bad_alloc",
                  "cannot allocate memory", "unable to allocate")


def error_lines(log: str) -> list[tuple[str, str]]:
    """(function, message) of each error line in llama.cpp's log."""
    out = []
    for line in log.splitlines():
        match = _ERROR_LINE.match(line.strip())
        if match:
            out.append((match.group(1), " ".join(match.group(2).split())))
    return out


def classify(log: str, path: Path, arch: str, window: int, slots: int) -> str:
    """One sentence for a failed load, from llama.cpp's error lines (see the module docstring)."""
    lines = error_lines(log)
    text = "\n".join(message for _, message in lines).lower()
    name = path.name
    if any(words in text for words in _OUT_OF_MEMORY):
        first = next(m for _, m in lines if any(w in m.lower() for w in _OUT_OF_MEMORY))
        return (f"llama.cpp ran out of memory loading {name} ({first.rstrip('.')}); a {window}-token "
                f"window in {slots} slots was asked for: lower STARCHAT_MAX_CONTEXT or "
                f"STARCHAT_LLAMACPP_SLOTS, or use a smaller model")
    if "unknown model architecture" in text:
        return (f"llama.cpp could not load {name}: its architecture {arch!r} is not supported by "
                f"this llama.cpp build")
    detail = next((m.split("error loading model:", 1)[1].strip() for _, m in lines
                   if "error loading model:" in m), None)
    if detail and ("not within the file bounds" in detail or "incomplete" in detail):
        return f"{name} is truncated or damaged: {detail.rstrip('.')}"
    if detail and "wrong shape" in detail:
        return (f"{name} does not match itself (its vocabulary or settings disagree with its "
                f"weights): {detail.rstrip('.')}")
    if detail:
        return f"llama.cpp could not load {name}: {detail.rstrip('.')}"
    if lines:
        return f"llama.cpp could not load {name}: {lines[0][1].rstrip('.')}"
    return f"llama.cpp could not load {name} and gave no reason (architecture {arch!r})"


def explain(path: Path, arch: str, window: int, slots: int) -> str:
    """Load ``path`` again in a child with llama.cpp's errors on; the sentence for its failure."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "model.runtime.llamacpp_errors", str(path.resolve()), str(window), str(slots)],
            capture_output=True, text=True, errors="replace", timeout=EXPLAIN_TIMEOUT,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        log = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        log = ""
    return classify(log, path, arch, window, slots)


def main(argv: list[str] | None = None) -> int:
    import xllamacpp

    from .llamacpp_server import start_server

    path, window, slots = (sys.argv[1:] if argv is None else argv)
    params = xllamacpp.CommonParams()
    params.model.path = path
    params.n_ctx = int(window)
    params.n_parallel = int(slots)
    params.kv_unified = True
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1
    params.verbosity = 1
    try:  # no TCP listener, as in load
        start_server(params)
    except RuntimeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
