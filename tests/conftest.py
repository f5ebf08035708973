"""Suite-wide settings, isolation, and the check that the suite leaves nothing behind.

- Nothing reaches a hub.
- The run gets a private temp dir (``TMPDIR``), worker runtime dir and data dir: no test
  talks to the user's own workers or conversations, and whatever a test leaves can be found.
- Every process the run starts inherits ``STARCHAT_TEST_SESSION`` (one value per run).
- At the end, workers the run started are stopped (they outlive their clients by design);
  then the run FAILS if any other process it started is still alive, or if anything but
  pytest's tmp_path folders (and torch's cache) is left in its temp dir. The temp dir is
  removed when the run passed, and kept (its path printed) when it did not.
- Under pytest-xdist (``make test`` runs two processes) each worker process is a run of its
  own as above, in a folder named after it inside the controller's temp dir; a worker that
  finds leftovers writes them to ``leftovers.txt`` there, and the controller fails the run
  and prints them (a worker's exit status does not reach the controller).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.cleanup import is_worker, marked_processes, terminate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Workers outlive the client that started them (that is their job); in tests they must not
# outlive the suite by long.
os.environ.setdefault("STARCHAT_WORKER_IDLE_TIMEOUT", "20")
# llama.cpp's worker threads meet at spin barriers many times per token: on a machine whose
# cores are oversubscribed (a test suite next to other work) two threads can be far slower
# than one (measured here under load: 5 answers in 82 s on one thread, none in 8 min on
# two). One thread keeps the suite's timing sane; users get all their cores.
os.environ.setdefault("STARCHAT_THREADS", "1")
# torch's OpenMP threads likewise (the test process, torch workers, training runs): measured
# on this 2-core machine under load (load average ~9), tests/model/test_engine.py took
# 67 s with one thread and 1,123 s with torch's default of two.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SESSION_MARK = "STARCHAT_TEST_SESSION"
SESSION_ID = uuid.uuid4().hex
os.environ[SESSION_MARK] = SESSION_ID

XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if XDIST_WORKER:  # inside the controller's temp dir (TMPDIR is inherited): short paths
    SUITE_TMP = Path(tempfile.gettempdir()) / XDIST_WORKER
    SUITE_TMP.mkdir()
else:
    SUITE_TMP = Path(tempfile.mkdtemp(prefix="starchat-suite-"))
LEFTOVERS = "leftovers.txt"
os.environ["TMPDIR"] = str(SUITE_TMP)
tempfile.tempdir = None  # re-read TMPDIR: pytest's tmp_path and every mkdtemp land here
OWN_ENTRIES = {"run", "data", "tmp", "cache"}  # made here, removed here
# Kept in the temp dir by design, and removed with it: the per-user cache torch creates
# there (torchinductor_USER) whatever the test.
# Neovim's run dir (nvim.USER) likewise.
TOOL_PREFIXES = ("torchinductor_", "nvim.")
os.environ["STARCHAT_RUNTIME_DIR"] = str(SUITE_TMP / "run")
os.environ["STARCHAT_DATA_DIR"] = str(SUITE_TMP / "data")
# Libraries' own caches stay in the run too, not in the user's home: datasets' arrow files
# of the local JSON it loads (training, lm-eval) and matplotlib's font list (eval plots).
os.environ["HF_DATASETS_CACHE"] = str(SUITE_TMP / "cache" / "hf-datasets")
os.environ["MPLCONFIGDIR"] = str(SUITE_TMP / "cache" / "matplotlib")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # tmp_path folders directly under the run's temp dir: a socket path in one must stay
    # under the 107 bytes AF_UNIX allows, so no pytest-of-USER/pytest-N levels in between.
    if config.option.basetemp is None or XDIST_WORKER:
        config.option.basetemp = str(SUITE_TMP / "tmp")


def leftover_processes() -> dict[int, str]:
    """Stop the run's workers, then return (and kill) every other process it left running."""
    terminate([pid for pid, cmd in marked_processes(SESSION_MARK, SESSION_ID).items() if is_worker(cmd)])
    left = marked_processes(SESSION_MARK, SESSION_ID)
    terminate(left, timeout=5)
    return left


def leftover_files() -> list[str]:
    """Entries of the run's temp dir that a test or the code under test did not remove."""
    if not SUITE_TMP.is_dir():
        return []
    return sorted(p.name for p in SUITE_TMP.iterdir()
                  if p.name not in OWN_ENTRIES and not p.name.startswith(TOOL_PREFIXES)
                  and not is_xdist_folder(p))


def is_xdist_folder(path: Path) -> bool:
    """A worker's own run folder (``gw0``...): left only when that worker failed."""
    return not XDIST_WORKER and path.name.startswith("gw") and path.name[2:].isdigit()


def worker_leftovers() -> list[str]:
    """What the xdist workers of this run reported as left behind (none without xdist)."""
    if XDIST_WORKER or not SUITE_TMP.is_dir():
        return []
    return [f"[{path.parent.name}] {line}" for path in sorted(SUITE_TMP.glob(f"gw*/{LEFTOVERS}"))
            for line in path.read_text().splitlines()]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    processes = leftover_processes()
    files = leftover_files()
    lines = [f"process {pid} still running: {cmd[:200]}" for pid, cmd in sorted(processes.items())]
    lines += [f"temp entry left behind: {SUITE_TMP / name}" for name in files]
    lines += worker_leftovers()
    if XDIST_WORKER and lines:
        (SUITE_TMP / LEFTOVERS).write_text("".join(line + "\n" for line in lines))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if lines:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter is not None:
            reporter.section("leftovers: the run must clean up what it starts", sep="=", red=True)
            for line in lines:
                reporter.write_line(line, red=True)
    for name in files:  # reported above; removed so the next run starts clean
        shutil.rmtree(SUITE_TMP / name, ignore_errors=True)
        (SUITE_TMP / name).unlink(missing_ok=True)
    if session.exitstatus == pytest.ExitCode.OK:
        shutil.rmtree(SUITE_TMP, ignore_errors=True)
    elif reporter is not None:
        reporter.write_line(f"temp files of this run (tmp_path of the tests): {SUITE_TMP}")


# What each real server writes to its log once per chat completion it runs.
_COMPLETION_MARK = {"transformers": "POST /v1/chat/completions", "llamacpp": "launch_slot_"}


@contextlib.contextmanager
def _openai_server(kind: str, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """One real OpenAI-compatible server on loopback: ``.kind``, ``.url`` (the API base,
    ``…/v1``), ``.log`` (its log) and ``.completions()`` (chat completions it has run).
    (``transformers serve`` starting is among the suite's slowest set-ups; one per module
    that needs it, as tests count the completions in its log.)"""
    from tests.servers import llamacpp_serve, transformers_serve

    log = tmp_path_factory.mktemp(kind) / "serve.log"
    serve = transformers_serve if kind == "transformers" else llamacpp_serve
    with serve(log) as url:
        yield SimpleNamespace(kind=kind, url=url, log=log, completions=lambda: log.read_text(
            errors="replace").count(_COMPLETION_MARK[kind]))


@pytest.fixture(scope="module")
def transformers_server(tmp_path_factory):
    """``transformers serve`` on the embedded model for one test module (``_openai_server``)."""
    with _openai_server("transformers", tmp_path_factory) as server:
        yield server


@pytest.fixture(scope="module")
def llamacpp_server(tmp_path_factory):
    """llama.cpp's server on the embedded GGUF for one test module (``_openai_server``)."""
    with _openai_server("llamacpp", tmp_path_factory) as server:
        yield server


@pytest.fixture(scope="module", params=["transformers", "llamacpp"])
def openai_server(request, tmp_path_factory):
    """Each real OpenAI-compatible server in turn, one at a time (the first is stopped
    before the second starts): the backend's tests run against both."""
    with _openai_server(request.param, tmp_path_factory) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight models per architecture (tests/tiny_models.py), built on first use."""
    from tests.tiny_models import TinyModels

    return TinyModels(tmp_path_factory.mktemp("tiny-models"))
