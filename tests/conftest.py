"""Suite-wide settings: nothing reaches a hub, and workers started by tests exit soon."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Workers outlive the client that started them (that is their job); in tests they must not
# outlive the suite by long.
os.environ.setdefault("STARCHAT_WORKER_IDLE_TIMEOUT", "20")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight models per architecture (tests/tiny_models.py), built on first use."""
    from tiny_models import TinyModels  # tests/ is on sys.path (rootdir conftest)

    return TinyModels(tmp_path_factory.mktemp("tiny-models"))
