"""The suite's leftover check (tests/conftest.py) holds under pytest-xdist, as `make test` runs it.

A worker's exit status does not reach the xdist controller, so a worker that finds a leftover
must report it through its folder; these run a small pytest session with the suite's
conftest as a plugin and two workers, once with a test that leaves a temp folder behind
and once without.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_two_workers(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(body)
    (tmp_path / "tmp").mkdir()
    # The inner run is a run of its own: not a worker of ours, and its own temp dir.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env["TMPDIR"] = str(tmp_path / "tmp")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "-n", "2", "-q", str(tmp_path / "test_inner.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_temp_folder_left_in_a_worker_fails_the_run_and_is_named(tmp_path):
    leaky = "import tempfile\n\ndef test_leaves_a_folder():\n    tempfile.mkdtemp(prefix='left-by-a-test-')\n"
    run = run_two_workers(tmp_path, leaky + "\ndef test_other():\n    pass\n")
    assert "2 passed" in run.stdout, run.stdout + run.stderr
    assert run.returncode == 1, run.stdout + run.stderr
    assert "leftovers: the run must clean up what it starts" in run.stdout
    assert "] temp entry left behind: " in run.stdout and "left-by-a-test-" in run.stdout


def test_a_clean_run_passes_and_leaves_nothing(tmp_path):
    run = run_two_workers(tmp_path, "def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout and "leftovers" not in run.stdout
    assert list((tmp_path / "tmp").iterdir()) == []
