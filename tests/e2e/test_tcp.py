"""`starchat lsp --tcp`: loopback only unless --allow-remote, and then a token first.

The real server process on a real socket; the clients are raw JSON-RPC over TCP. No model
is loaded (the settings name a worker socket that does not exist).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lsp_server import commands

from .rawlsp import encode, frame

SERVER = [sys.executable, "-m", "lsp_server", "lsp"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tcp_server(tmp_path: Path, host: str, *extra: str) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    port = _free_port()
    env = dict(os.environ, STARCHAT_DATA_DIR=str(tmp_path / "data"), STARCHAT_RUNTIME_DIR=str(tmp_path / "run"))
    stderr = tmp_path / f"stderr-{port}.log"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen([*SERVER, "--tcp", f"{host}:{port}", *extra], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):  # (not by connecting: a loopback session's end ends the server)
            assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.1)
        yield proc, port, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _listening(port: int) -> bool:
    """Whether a socket of this host listens on ``port`` (from /proc/net/tcp*, state 0A)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


class Client:
    """A raw LSP client on TCP: frames out, every frame in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def send(self, message: dict) -> None:
        self.sock.sendall(frame(encode(message)))

    def read(self) -> dict | None:
        """The next message, or None when the server closed the connection."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        header, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in header.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "closed inside a frame"
            rest += chunk
        self.buffer = rest[length:]
        return json.loads(rest[:length])

    def answer(self, msg_id) -> dict:
        while True:
            message = self.read()
            assert message is not None, f"closed before answering {msg_id}"
            if message.get("id") == msg_id and "method" not in message:
                return message

    def close(self) -> None:
        self.sock.close()


def initialize(workspace: Path, tmp_path: Path, msg_id="init", **options) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "method": "initialize", "params": {
        "processId": None, "rootUri": workspace.as_uri(), "capabilities": {},
        "initializationOptions": {"starchat": {"worker": {"autostart": False,
                                                          "socket_path": str(tmp_path / "none.sock")}}, **options}}}


def export(msg_id, path: str) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "method": "workspace/executeCommand",
            "params": {"command": commands.EXPORT_CONVERSATIONS, "arguments": [{"path": path}]}}


def _stderr_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_a_non_loopback_address_is_refused_without_the_flag(tmp_path, host):
    result = subprocess.run([*SERVER, "--tcp", f"{host}:{_free_port()}"], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, STARCHAT_DATA_DIR=str(tmp_path)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{host} is not a loopback address" in lines[0] and "--allow-remote" in lines[0]
    assert not (tmp_path / "lsp-token").exists()


def test_allow_remote_needs_tcp(tmp_path):
    result = subprocess.run([*SERVER, "--allow-remote"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--allow-remote goes with --tcp" in result.stderr


def test_loopback_needs_no_token(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with tcp_server(tmp_path, "127.0.0.1") as (_proc, port, stderr):
        client = Client(port)
        client.send(initialize(workspace, tmp_path))
        assert "capabilities" in client.answer("init")["result"]
        client.close()
    assert not (tmp_path / "data" / "lsp-token").exists()


def test_with_allow_remote_a_client_needs_the_token_and_nothing_runs_without_it(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    victim = tmp_path / "victim.jsonl"
    with tcp_server(tmp_path, "0.0.0.0", "--allow-remote") as (proc, port, stderr):
        token_file = tmp_path / "data" / "lsp-token"
        token = token_file.read_text().strip()
        assert len(token) >= 40 and stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert any(token in line for line in _stderr_lines(stderr))  # printed once, at creation

        wrong = [None, "", "wrong", token + "x", token[:-1], "t\u00f6ken-\u2603" * 8, 12345, {"a": token}]
        for n, bad in enumerate(wrong):
            client = Client(port)
            options = {} if bad is None else {"token": bad}
            client.send(initialize(workspace, tmp_path, f"init-{n}", **options))
            client.send(export(f"export-{n}", str(victim)))  # must never run
            answer = client.read()
            assert answer["id"] == f"init-{n}" and answer["error"]["code"] == -32600, answer
            assert "Authentication required" in answer["error"]["message"]
            assert client.read() is None  # disconnected; the export got no answer
            client.close()
        client = Client(port)  # not initialize first: refused with id null
        client.send(export("first", str(victim)))
        answer = client.read()
        assert answer["error"]["code"] == -32600 and answer["id"] == "first"
        assert client.read() is None
        client.close()
        assert not victim.exists() and proc.poll() is None  # nothing ran; the server waits on

        client = Client(port)
        client.send(initialize(workspace, tmp_path, "ok", token=token))
        assert "capabilities" in client.answer("ok")["result"]
        intruder = Client(port)  # a second client while one is served: told and closed
        answer = intruder.read()
        assert "Another client is connected" in answer["error"]["message"] and intruder.read() is None
        intruder.close()
        client.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        client.send(export("abs", str(victim)))  # outside the workspace: refused over TCP
        refused = client.answer("abs")
        assert refused["error"]["code"] == -32602 and "over TCP, exports are written inside the workspace" \
            in refused["error"]["message"]
        client.send(export("inside", str(workspace / "chats.jsonl")))
        assert client.answer("inside")["result"]["path"] == str(workspace.resolve() / "chats.jsonl")
        client.send({"jsonrpc": "2.0", "id": "bye", "method": "shutdown"})
        client.answer("bye")
        client.send({"jsonrpc": "2.0", "method": "exit"})
        assert proc.wait(30) == 0
        client.close()
    assert not victim.exists()

    with tcp_server(tmp_path, "0.0.0.0", "--allow-remote") as (_proc, _port, stderr):  # the next run
        pass
    assert token_file.read_text().strip() == token
    assert not any(token in line for line in _stderr_lines(stderr))
    assert any(str(token_file) in line for line in _stderr_lines(stderr))
