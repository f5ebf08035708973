"""In-process: which clients get early answers, the setting, and the conversation file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from lsprotocol import types

from lsp_server.config import parse_settings
from lsp_server.features.early_answer import answers_early, process_name
from lsp_server.transcript import Transcript


def server(answer: str = "auto", name: str | None = None, pid: int | None = None):
    settings, problems = parse_settings({"commands": {"answer": answer}})
    assert problems == []
    info = types.ClientInfo(name=name) if name is not None else None
    return SimpleNamespace(settings=settings, client_info=info, process_id=pid)


@pytest.mark.parametrize("name", ["Eglot", "emacs", "lsp-mode"])
def test_emacs_clients_answer_early(name):
    assert answers_early(server(name=name))


@pytest.mark.parametrize("name", ["Neovim", "Visual Studio Code", "helix", "pytest-lsp"])
def test_other_clients_wait(name):
    assert not answers_early(server(name=name))


def test_the_setting_wins_over_the_client():
    assert answers_early(server("early", name="Neovim"))
    assert not answers_early(server("wait", name="Eglot"))


def test_without_client_info_the_process_name_decides():
    # This process is Python, not Emacs.
    assert process_name(os.getpid()) != ""
    assert not answers_early(server(pid=os.getpid()))
    assert not answers_early(server(pid=None))
    # A process named like Emacs: the kernel names a script after its file.
    script = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"emacs-{os.getpid()}")
    with open(script, "w") as out:
        out.write(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    os.chmod(script, 0o700)
    proc = subprocess.Popen([script])
    try:
        for _ in range(200):  # until the child has exec'd (the fork is still "python")
            if process_name(proc.pid).startswith("emacs"):
                break
            time.sleep(0.05)
        assert process_name(proc.pid).startswith("emacs")
        assert answers_early(server(pid=proc.pid))
    finally:
        proc.kill()
        proc.wait()
        os.unlink(script)


@pytest.mark.parametrize("bad", ["sometimes", 1, None, ["early"]])
def test_a_bad_answer_setting_warns_and_keeps_auto(bad):
    settings, problems = parse_settings({"commands": {"answer": bad}})
    assert settings.commands.answer == "auto"
    assert problems == [
        'Setting starchat.commands.answer must be "auto", "wait" or "early"; '
        "using the default 'auto'."
    ]


def test_unknown_commands_key_warns():
    settings, problems = parse_settings({"commands": {"answr": "early"}})
    assert settings.commands.answer == "auto"
    assert problems == ["Unknown setting starchat.commands.answr is ignored."]


def test_transcript_renders_turns_and_is_replaced_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("STARCHAT_DATA_DIR", str(tmp_path))
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    doc = Transcript("ab" * 16, "StarChat: Chat", history, "What is 2+2?")
    assert doc.path == tmp_path / "conversations" / f"{'ab' * 16}.md"
    doc.write("It is", "generating")
    text = doc.path.read_text()
    assert text.startswith("# StarChat: Chat\n")
    assert "## You\n\nHi\n\n## StarChat\n\nHello!\n\n## You\n\nWhat is 2+2?\n" in text
    assert text.splitlines()[doc.answer_line] == "## StarChat"
    assert text.rstrip().endswith("still writing; this file is updated as the answer streams]_")
    doc.write("It is 4.")
    assert doc.path.read_text().endswith("## StarChat\n\nIt is 4.\n")
    doc.write("It is", "stopped")
    assert doc.path.read_text().endswith("It is\n\n_[stopped]_\n")
    # Atomic replacement leaves no temporary file behind.
    assert sorted(p.name for p in doc.path.parent.iterdir()) == [doc.path.name]
    assert doc.uri == doc.path.as_uri()
