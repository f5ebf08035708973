"""Real servers the tests run on loopback: ``transformers serve`` on the embedded model.

One definition for every test of the OpenAI-compatible backend (tests/model and
tests/e2e); the fixture ``transformers_server`` (tests/conftest.py) starts one per module.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 180  # the server imports torch, transformers, fastapi and loads the model


def free_port() -> int:
    """A loopback port nothing listens on (bound for a moment, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def transformers_serve(log_path: Path) -> Iterator[str]:
    """Run ``transformers serve`` on the embedded model's folder (no hub), logging to
    ``log_path`` (its access log names every request); yield its base url (``…/v1``)."""
    from model.loading import local_folder

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           # One intra-op thread: on 2 shared cores, more threads spin against the other
           # processes (measured: TTFT 1.8 s instead of 14 s, decode 3.5 instead of 1.5 tok/s).
           "OMP_NUM_THREADS": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from transformers.cli.transformers import main; main()",
             "serve", local_folder("default")[1], "--host", "127.0.0.1", "--port", str(port),
             "--device", "cpu"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not start in {START_TIMEOUT} s")
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
