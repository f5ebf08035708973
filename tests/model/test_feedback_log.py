"""The feedback log's file: where a workspace's log is, whole-line appends, the size cap, and
a reader that skips what is not a whole row and says so."""

from __future__ import annotations

import json
import logging
import os

import pytest

from model.runtime import feedback_log
from model.runtime.feedback_log import append_row, check_row, log_path, read_rows


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STARCHAT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def completion(root, text="y = 2\n", **extra):
    return {"kind": "completion", "workspace": str(root), "path": "a.py", "prefix": "x = 1\n",
            "suffix": "", "completion": text, "time": 1.0, **extra}


def chat(root, conversation="c1"):
    return {"kind": "chat", "workspace": str(root), "command": "chat", "conversation": conversation,
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "time": 2.0}


def test_one_file_per_workspace_keyed_by_the_real_root(tmp_path, data_dir):
    (tmp_path / "a" / "proj").mkdir(parents=True)
    (tmp_path / "b" / "proj").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "proj")
    first = log_path(tmp_path / "a" / "proj")
    assert first.parent == data_dir / "feedback" and first.name.startswith("proj-") and first.suffix == ".jsonl"
    assert log_path(tmp_path / "link") == first  # the same folder by another path
    assert log_path(tmp_path / "b" / "proj") != first  # same name, another folder


def test_rows_are_whole_lines_in_a_private_file(tmp_path):
    path = log_path(tmp_path)
    assert append_row(path, completion(tmp_path), 10_000) and append_row(path, chat(tmp_path), 10_000)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and [json.loads(line)["kind"] for line in lines[:-1]] == ["completion", "chat"]
    got = read_rows(path, tmp_path)
    assert got.rows == [completion(tmp_path), chat(tmp_path)] and got.bad == []
    assert got.counts() == {"completion": 1, "edit": 0, "chat": 1}


def test_a_torn_line_stays_a_bad_line_of_its_own_and_the_reader_says_so(tmp_path, caplog):
    path = log_path(tmp_path)
    append_row(path, completion(tmp_path, "first"), 10_000)
    with path.open("ab") as f:
        f.write(b'{"kind": "chat", "workspa')  # a crash in the middle of a row
    append_row(path, completion(tmp_path, "after"), 10_000)
    with path.open("ab") as f:
        f.write(b"\xff\xfe not text\n[1, 2]\n" + json.dumps({**chat(tmp_path), "messages": []}).encode() + b"\n")
    with caplog.at_level(logging.WARNING, logger="model.runtime.feedback_log"):
        got = read_rows(path, tmp_path)
    assert [r["completion"] for r in got.rows] == ["first", "after"]
    assert got.bad == [2, 4, 5, 6]
    assert "skipped 4 line(s)" in caplog.text and "line 2, 4, 5, 6" in caplog.text


def test_the_size_cap_stops_the_log(tmp_path):
    path = log_path(tmp_path)
    assert append_row(path, completion(tmp_path), 400)
    size = path.stat().st_size
    assert not append_row(path, completion(tmp_path, "x" * 400), 400)
    assert path.stat().st_size == size


def test_rows_of_another_workspace_are_not_read(tmp_path):
    path = log_path(tmp_path)
    append_row(path, completion(tmp_path), 10_000)
    append_row(path, completion(tmp_path / "other"), 10_000)
    got = read_rows(path, tmp_path)
    assert len(got.rows) == 1 and got.other == 1
    assert read_rows(log_path(tmp_path / "missing")).rows == []


@pytest.mark.parametrize(("change", "why"), [
    ({"kind": "note"}, "kind must be"),
    ({"workspace": ""}, "workspace must be"),
    ({"time": True}, "time must be"),
    ({"completion": ""}, "completion must not be empty"),
    ({"prefix": None}, "prefix must be a string"),
])
def test_check_row_names_what_is_wrong(tmp_path, change, why):
    assert check_row(completion(tmp_path)) is None
    assert why in check_row({**completion(tmp_path), **change})
    with pytest.raises(ValueError):
        append_row(log_path(tmp_path), {**completion(tmp_path), **change}, 10_000)


def test_dialogue_rows_end_with_the_assistant(tmp_path):
    row = chat(tmp_path)
    assert check_row({**row, "messages": row["messages"][:1]}) is not None
    assert "last message" in check_row({**row, "messages": row["messages"][::-1]})
    assert "role" in check_row({**row, "messages": [{"role": "tool", "content": ""}, *row["messages"]]})
    edit = {**row, "kind": "edit", "command": "explain"}
    assert "command must be" in check_row(edit)
    assert check_row({**edit, "command": "fix"}) is None


def test_delete_logs_says_what_it_deleted(tmp_path):
    path = log_path(tmp_path)
    append_row(path, completion(tmp_path), 10_000)
    size = path.stat().st_size
    assert feedback_log.delete_logs([path, log_path(tmp_path / "none")]) == [(path, size)]
    assert not path.exists() and feedback_log.log_files() == []
