"""Finding and stopping what tests started: model workers and other processes.

A worker outlives the client that started it (that is its job), so a test that starts one
must stop it, and wait until it is gone: a signal alone leaves it running for a while.
The suite-wide leftover check (tests/conftest.py) finds every process the suite started
by a mark in its environment, which only processes started by this pytest run inherit.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

WORKER_COMMANDS = ("model.serving.worker", "lsp_server worker", "starchat worker")


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (dead, not yet reaped) counts as gone."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reaps it if it is our own child
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def terminate(pids, timeout: float = 15.0) -> list[int]:
    """SIGTERM each pid, wait up to ``timeout`` s, then SIGKILL. Returns those that needed it."""
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_alive(p) for p in pids):
        time.sleep(0.05)
    stubborn = [p for p in pids if is_alive(p)]
    for pid in stubborn:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(is_alive(p) for p in stubborn):
        time.sleep(0.05)
    return stubborn


def worker_pids(runtime: Path) -> list[int]:
    """Pids of the workers answering on sockets anywhere under ``runtime``."""
    from model.serving.client import WorkerClient

    pids = []
    for sock in Path(runtime).rglob("*.sock"):
        try:
            with WorkerClient(socket_path=sock, autostart=False) as client:
                pid = client.info().get("pid")
        except Exception:  # a stale socket: nobody answers, nothing to stop
            continue
        if pid:
            pids.append(int(pid))
    return pids


def stop_workers(runtime: Path) -> None:
    """Stop every worker with a socket under ``runtime`` and wait until each has exited."""
    terminate(worker_pids(runtime))


def marked_processes(name: str, value: str) -> dict[int, str]:
    """Live processes (not this one) whose environment holds ``name=value``: pid → command line."""
    needle = f"{name}={value}".encode()
    found = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if is_alive(int(entry.name)):
            found[int(entry.name)] = command.strip()
    return found


def is_worker(command: str) -> bool:
    return any(name in command for name in WORKER_COMMANDS)
