"""Real servers the tests run on loopback, both on the embedded model: ``transformers serve``
(its safetensors folder) and llama.cpp's own server (its GGUF file, through ``xllamacpp``).

One definition for every test of the OpenAI-compatible backend (tests/model and
tests/e2e); the fixtures in tests/conftest.py start one per module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 180  # the server imports torch, transformers, fastapi and loads the model
LLAMACPP_MODEL = "smollm2-135m-instruct"  # the name llama.cpp's server lists (--alias)


def free_port() -> int:
    """A loopback port nothing listens on (bound for a moment, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def transformers_serve(log_path: Path) -> Iterator[str]:
    """Run ``transformers serve`` on the embedded model's folder (no hub), logging to
    ``log_path`` (its access log names every request); yield its base url (``…/v1``)."""
    from model.runtime.loading import local_folder

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           # One intra-op thread: on 2 shared cores, more threads spin against the other
           # processes (measured: TTFT 1.8 s instead of 14 s, decode 3.5 instead of 1.5 tok/s).
           "OMP_NUM_THREADS": "1"}
    with _own_tmp(log_path) as tmp, open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from transformers.cli.transformers import main; main()",
             "serve", local_folder("default"), "--host", "127.0.0.1", "--port", str(port),
             "--device", "cpu"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**env, "TMPDIR": str(tmp)},
            start_new_session=True,
        )
        with _running(proc, port, log_path, "transformers serve") as url:
            yield url


# llama.cpp's server in a process of its own (the test process stays free of its threads,
# and terminating the process is the whole shutdown). argv: GGUF path, port, alias.
_LLAMACPP_SCRIPT = """
import signal, sys
import xllamacpp
p = xllamacpp.CommonParams()
p.model.path = sys.argv[1]
p.model_alias = {sys.argv[3]}
p.hostnames = ["127.0.0.1"]
p.port = int(sys.argv[2])
p.n_ctx = 2048
p.n_parallel = 1
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 1
server = xllamacpp.Server(p)
print("listening on", server.listening_address, flush=True)
while True:
    signal.pause()
"""


@contextlib.contextmanager
def llamacpp_serve(log_path: Path) -> Iterator[str]:
    """Run llama.cpp's server (``xllamacpp.Server``) on the embedded GGUF, one thread, a
    2,048-token window, logging to ``log_path`` (a ``launch_slot_`` line per completion);
    yield its base url (``…/v1``). It lists one model, :data:`LLAMACPP_MODEL`."""
    from model.runtime.spec import default_gguf_path

    port = free_port()
    with _own_tmp(log_path) as tmp, open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LLAMACPP_SCRIPT, str(default_gguf_path()), str(port), LLAMACPP_MODEL],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**os.environ, "TMPDIR": str(tmp)},
            start_new_session=True,
        )
        with _running(proc, port, log_path, "llama.cpp's server") as url:
            yield url


@contextlib.contextmanager
def _own_tmp(log_path: Path) -> Iterator[Path]:
    """A temp dir of the server's own, next to its log, removed once the server is stopped.
    ``transformers serve`` runs the model in a process of its own, which puts tensors on a
    multiprocessing queue (torch shares them through a listener in a ``pymp-*`` folder) and
    is terminated, its finalisers unrun, when the server exits: that folder stays behind."""
    tmp = log_path.parent / "tmp"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _running(proc: subprocess.Popen, port: int, log_path: Path, name: str) -> Iterator[str]:
    """Wait for ``/health`` of ``proc`` on ``port``; yield the base url; terminate and wait."""
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited: {log_path.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not start in {START_TIMEOUT} s")
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        # The server, then whatever of its session is left (a model process it could not stop).
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
