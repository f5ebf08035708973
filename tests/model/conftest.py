"""Fixtures for the model layer: the real embedded model, loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def loaded():
    from model.runtime.loading import load_model

    return load_model("default")


@pytest.fixture(scope="session")
def hf_loaded():
    """The same model run by transformers: the reference our own runner must equal."""
    from model.runtime.loading import load_model

    return load_model("default", runner="transformers")


@pytest.fixture(scope="session")
def tokenizer():
    """transformers' tokenizer (training adds tokens to copies of it); the worker's own
    tokenizer is compared with it in test_tokenizer.py."""
    from model.runtime.loading import load_tokenizer

    return load_tokenizer("default")


@pytest.fixture(scope="session")
def engine(loaded):
    from model.runtime.engine import Engine

    return Engine(loaded)


@pytest.fixture()
def runtime_dir(tmp_path_factory, monkeypatch):
    """A socket dir no other test used (so "no worker runs" can be asserted); workers
    started in it are stopped afterwards."""
    path = tmp_path_factory.mktemp("rt")
    monkeypatch.setenv("STARCHAT_RUNTIME_DIR", str(path))
    yield path
    kill_workers(path)


def kill_workers(runtime: Path) -> None:
    """Stop the workers started under ``runtime`` and wait until they have exited."""
    from tests.cleanup import stop_workers

    stop_workers(runtime)


@pytest.fixture(scope="module")
def worker_socket(tmp_path_factory):
    """One real worker (embedded model) shared by a test module."""
    from model.serving.client import ensure_worker

    runtime = tmp_path_factory.mktemp("worker")
    path = ensure_worker("default", runtime / "worker.sock")
    yield path
    kill_workers(runtime)
