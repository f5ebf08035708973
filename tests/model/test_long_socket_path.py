"""A runtime dir deep enough to push the worker's socket past the AF_UNIX path limit
(~107 bytes) still works: the worker binds, and clients connect, through the folder's
descriptor; the socket stays in the runtime dir where every client looks for it."""

from __future__ import annotations

import json
import subprocess
import sys

from model.runtime.spec import ModelSpec
from model.serving import protocol
from model.serving.client import WorkerClient

from .conftest import kill_workers


def test_ask_and_a_second_client_work_with_a_socket_path_past_the_limit(tmp_path, monkeypatch):
    runtime = tmp_path / ("d" * 60) / ("e" * 40)
    runtime.mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("STARCHAT_RUNTIME_DIR", str(runtime))
    socket_path = protocol.socket_path_for(ModelSpec.default())
    assert len(str(socket_path).encode()) > 108  # too long for sun_path as it is
    try:
        r = subprocess.run([sys.executable, "-m", "lsp_server", "ask", "Say hi.", "--max-new-tokens", "4",
                            "--stats"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "AF_UNIX" not in r.stderr and r.stdout.strip()
        stats = json.loads(r.stderr.strip().splitlines()[-1])
        assert 1 <= stats["tokens"] <= 4
        assert socket_path.exists()  # the socket lives where clients look for it
        with WorkerClient(socket_path=socket_path, autostart=False) as client:  # a second client
            assert client.info()["ready"] is True
    finally:
        kill_workers(runtime)
