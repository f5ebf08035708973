"""`starchat ask` end to end through a real worker, and its usage errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def starchat(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lsp_server", *args], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    import os

    from tests.model.conftest import kill_workers

    runtime = tmp_path_factory.mktemp("cli-rt")
    env = dict(os.environ, STARCHAT_RUNTIME_DIR=str(runtime))
    yield env
    os.environ_backup = None
    old = os.environ.get("STARCHAT_RUNTIME_DIR")
    os.environ["STARCHAT_RUNTIME_DIR"] = str(runtime)
    try:
        kill_workers(runtime)
    finally:
        if old is None:
            del os.environ["STARCHAT_RUNTIME_DIR"]
        else:
            os.environ["STARCHAT_RUNTIME_DIR"] = old


def test_ask_streams_a_def_and_prints_stats(cli_env):
    r = starchat("ask", "Write a Python function is_even(n).", "--stats", "--max-new-tokens", "48", env=cli_env)
    assert r.returncode == 0, r.stderr
    assert "def is_even" in r.stdout
    stats = json.loads(r.stderr.strip().splitlines()[-1])
    assert set(stats) == {"ttft_s", "tokens", "tok_per_s", "prompt_tokens"}
    assert stats["tokens"] > 0 and stats["prompt_tokens"] > 10


def test_ask_with_a_file_selection(cli_env, tmp_path):
    src = tmp_path / "calc.py"
    src.write_text("import math\n\n\ndef area(r):\n    return math.pi * r ** 2\n")
    r = starchat("ask", "What does this function compute?", "--file", str(src), "--lines", "4-5",
                 "--max-new-tokens", "40", env=cli_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


@pytest.mark.parametrize("args,message", [
    (["ask", "hi", "--model", "no/such/thing/x"], "does not exist"),
    (["ask", "hi", "--file", "/nonexistent.py"], "Cannot read"),
    (["ask", "hi", "--file", "pyproject.toml", "--lines", "5-2"], "range"),
    (["ask", "hi", "--file", "pyproject.toml", "--lines", "1-99999"], "only"),
    (["ask", "hi", "--lines", "1-2"], "--lines needs --file"),
    (["ask", "hi", "--temperature", "-3"], "temperature"),
])
def test_usage_errors_exit_2_with_a_sentence(args, message, cli_env):
    r = starchat(*args, env=cli_env)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("command", ["worker", "train", "eval", "ask", "chat", "lsp"])
def test_every_subcommand_has_help(command):
    r = starchat(command, "--help")
    assert r.returncode == 0 and "usage: starchat" in r.stdout, r.stderr
