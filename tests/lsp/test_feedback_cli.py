"""``starchat feedback [show|path|clear]``: the user sees and deletes the editor's feedback log,
without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from model.runtime.feedback_log import append_row, log_path
from tests.import_guard import guarded_command, heavy_imports


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("STARCHAT_DATA_DIR", str(tmp_path / "data"))
    return dict(os.environ)


def starchat(env: dict, *args: str, record=None) -> subprocess.CompletedProcess:
    argv = ["lsp_server", "feedback", *args]
    command = guarded_command(record, argv) if record else [sys.executable, "-m", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)


def rows_for(root, kinds):
    for i, kind in enumerate(kinds):
        row = {"kind": "completion", "path": "a.py", "prefix": "x", "suffix": "", "completion": f"y{i}"}
        if kind == "chat":
            row = {"kind": "chat", "command": "chat", "conversation": "c",
                   "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
        assert append_row(log_path(root), {"workspace": str(root), "time": 1.0, **row}, 10**6)


def test_show_counts_rows_by_kind_and_says_where(tmp_path, env):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    rows_for(one, ["completion", "completion", "chat"])
    rows_for(two, ["chat"])
    with log_path(one).open("ab") as f:
        f.write(b"not json\n")
    record = tmp_path / "imports.txt"
    r = starchat(env, "show", record=record)
    assert r.returncode == 0, r.stderr
    assert heavy_imports(record) == ""  # torch-free
    assert f"{log_path(one)}\n  workspace: {one}\n  rows: completion 2, edit 0, chat 1; 1 bad line(s) skipped" in r.stdout
    assert f"{log_path(two)}\n  workspace: {two}\n  rows: completion 0, edit 0, chat 1\n" in r.stdout
    assert "skipped 1 line(s)" in r.stderr  # the reader says so

    r = starchat(env, "show", "--json", "--workspace", str(two))
    (entry,) = json.loads(r.stdout)["logs"]
    assert entry == {"path": str(log_path(two)), "workspace": str(two), "rows": {"completion": 0, "edit": 0, "chat": 1},
                     "bad_lines": 0, "bytes": log_path(two).stat().st_size}
    assert starchat(env, "path").stdout.strip() == str(log_path(one).parent)
    assert starchat(env, "path", "--workspace", str(one)).stdout.strip() == str(log_path(one))


def test_clear_deletes_without_asking_when_not_at_a_terminal(tmp_path, env):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    rows_for(one, ["completion"])
    rows_for(two, ["chat"])
    size = log_path(one).stat().st_size
    r = starchat(env, "clear", "--workspace", str(one))
    assert r.returncode == 0 and r.stdout == f"Deleted {log_path(one)} ({size} bytes).\n"
    assert not log_path(one).exists() and log_path(two).exists()
    assert "No feedback log for" in starchat(env, "clear", "--workspace", str(one)).stdout
    r = starchat(env, "clear")
    assert r.returncode == 0 and r.stdout.startswith(f"Deleted {log_path(two)} ")
    assert "No feedback log in" in starchat(env).stdout  # show is the default


def test_a_workspace_that_is_not_a_folder_is_one_sentence_and_exit_2(tmp_path, env):
    r = starchat(env, "show", "--workspace", str(tmp_path / "missing"))
    assert r.returncode == 2
    assert r.stderr == f"starchat feedback: --workspace {tmp_path / 'missing'} is not a folder.\n"
