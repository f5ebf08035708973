"""`starchat ask` end to end through a real worker, and its usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def starchat(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lsp_server", *args], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    """A runtime dir for this module's `ask` tests: they share one worker, stopped at the end."""
    from tests.model.conftest import kill_workers

    runtime = tmp_path_factory.mktemp("cli-rt")
    yield dict(os.environ, STARCHAT_RUNTIME_DIR=str(runtime))
    kill_workers(runtime)


@pytest.fixture
def fresh_env(tmp_path_factory):
    """A runtime dir no other test used: a socket found there was started by this test."""
    from tests.model.conftest import kill_workers

    runtime = tmp_path_factory.mktemp("cli-rt-fresh")
    yield dict(os.environ, STARCHAT_RUNTIME_DIR=str(runtime))
    kill_workers(runtime)


def test_ask_streams_a_def_and_prints_stats(cli_env):
    r = starchat("ask", "Write a Python function is_even(n).", "--stats", "--max-new-tokens", "48", env=cli_env)
    assert r.returncode == 0, r.stderr
    assert "def is_even" in r.stdout
    stats = json.loads(r.stderr.strip().splitlines()[-1])
    assert set(stats) == {"ttft_s", "tokens", "tok_per_s", "prompt_tokens", "engine", "total_s", "threads"}
    assert stats["tokens"] > 0 and stats["prompt_tokens"] > 10
    assert stats["engine"] == "llama.cpp"  # the default GGUF runs on llama.cpp
    assert stats["total_s"] >= stats["ttft_s"] > 0 and stats["threads"] >= 1  # (threads: llama.cpp's, this answer)


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


@pytest.mark.parametrize("command", ["worker", "train", "eval", "ask", "chat", "lsp", "export-gguf"])
def test_every_subcommand_has_help(command):
    # (train: its parser is built from the training config classes, which import torch and
    # transformers; a real `starchat train --help` is what a user types first)
    r = starchat(command, "--help")
    assert r.returncode == 0 and "usage: starchat" in r.stdout, r.stderr


# --url: an OpenAI-compatible server instead of the worker. These need no server (the real
# one runs in tests/e2e/test_openai_backend.py); none of them may start a local worker.


@pytest.fixture
def closed_url():
    """A loopback URL on a port that is bound but not listening: connecting is refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.mark.parametrize("args,message", [
    (["ask", "hi", "--url", "ftp://x"], "must start with http:// or https://"),
    (["chat", "--url", "ftp://x"], "must start with http:// or https://"),
    (["ask", "hi", "--url", ""], "--url is empty"),
    (["ask", "hi", "--url", "http://h:99999/v1"], "invalid port"),
    (["ask", "hi", "--url", "http://h/v1", "--model", "some/local-model"], "cannot be combined with --url"),
    (["ask", "hi", "--url", "http://h/v1", "--api-model", " "], "--api-model is empty"),
    (["ask", "hi", "--url", "http://h/v1", "--api-key-env", "sk-secret-123"], "name of an environment variable"),
    (["ask", "hi", "--api-model", "m"], "--api-model needs --url"),
    (["chat", "--api-key-env", "TEAM_KEY"], "--api-key-env needs --url"),
])
def test_bad_url_options_exit_2_with_a_sentence(args, message, fresh_env):
    r = starchat(*args, env=fresh_env)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "sk-secret-123" not in r.stderr  # a key pasted as the variable's name is not echoed
    assert r.stdout == ""
    assert not list(Path(fresh_env["STARCHAT_RUNTIME_DIR"]).glob("*.sock"))


@pytest.mark.parametrize("command", [["ask", "Write a Python function is_even(n)."], ["chat"]])
def test_unreachable_server_fails_fast_with_a_sentence(command, closed_url, fresh_env):
    # --model default is the default, so it may go with --url. The refusal is final at once
    # (no retries, no read timeout to sit out); the generous limit only guards against a hang.
    r = subprocess.run([sys.executable, "-m", "lsp_server", *command, "--url", closed_url,
                        "--model", "default"], input="hi\n", capture_output=True, text=True,
                       timeout=120, env=fresh_env)
    assert r.returncode == 1, r.stderr
    assert f"The server at {closed_url} is unreachable" in r.stderr
    assert "Traceback" not in r.stderr
    assert "you>" not in r.stdout  # chat checks the server before the first prompt
    assert not list(Path(fresh_env["STARCHAT_RUNTIME_DIR"]).glob("*.sock"))


def test_url_options_are_in_help():
    for command in ("ask", "chat"):
        r = starchat(command, "--help")
        assert all(flag in r.stdout for flag in ("--url", "--api-model", "--api-key-env"))
