"""Fixtures for the model layer: the real embedded model, loaded once per session."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def loaded():
    from model.loading import load_model

    return load_model("default")


@pytest.fixture(scope="session")
def hf_loaded():
    """The same model run by transformers: the reference our own runner must equal."""
    from model.loading import load_model

    return load_model("default", runner="transformers")


@pytest.fixture(scope="session")
def tokenizer():
    """transformers' tokenizer (training adds tokens to copies of it); the worker's own
    tokenizer is compared with it in test_tokenizer.py."""
    from model.loading import load_tokenizer

    return load_tokenizer("default")


@pytest.fixture(scope="session")
def engine(loaded):
    from model.engine import Engine

    return Engine(loaded)


@pytest.fixture()
def runtime_dir(tmp_path_factory, monkeypatch) -> Path:
    """A private socket dir; workers started in it exit when it is removed."""
    path = tmp_path_factory.mktemp("rt")
    monkeypatch.setenv("STARCHAT_RUNTIME_DIR", str(path))
    return path


def kill_workers(runtime: Path) -> None:
    """Stop workers started for a test (they would also exit once their socket is gone)."""
    from model.client import WorkerClient

    for sock in runtime.glob("worker-*.sock"):
        try:
            with WorkerClient(socket_path=sock, autostart=False) as client:
                pid = client.info().get("pid")
            if pid:
                os.kill(pid, signal.SIGTERM)
        except Exception:
            pass


@pytest.fixture(scope="module")
def worker_socket(tmp_path_factory):
    """One real worker (embedded model) shared by a test module."""
    from model.client import ensure_worker

    runtime = tmp_path_factory.mktemp("worker")
    path = ensure_worker("default", runtime / "worker.sock")
    yield path
    kill_workers(runtime)
