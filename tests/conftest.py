"""Suite-wide settings: nothing reaches a hub, and workers started by tests exit soon."""

import os
from types import SimpleNamespace

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Workers outlive the client that started them (that is their job); in tests they must not
# outlive the suite by long.
os.environ.setdefault("STARCHAT_WORKER_IDLE_TIMEOUT", "20")


@pytest.fixture(scope="module")
def transformers_server(tmp_path_factory):
    """``transformers serve`` on the embedded model for one test module: ``.url`` (the API
    base, ``…/v1``) and ``.log`` (its log, with an access line per request)."""
    from tests.servers import transformers_serve

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with transformers_serve(log) as url:
        yield SimpleNamespace(url=url, log=log)
