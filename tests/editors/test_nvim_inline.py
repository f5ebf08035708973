"""Inline completion in a real Neovim (0.11: the plugin's own ghost text), typed over RPC.

``nvim --headless -l`` never processes typeahead, so an embedded Neovim is driven with
pynvim: keys go through ``nvim_input`` as a person's would, the screen state is read back
as extmarks. The real server and the embedded model answer. The feedback log is on here:
accepting a suggestion runs the command the item carries, which logs it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pynvim
import pytest
from nvim_harness import MINIMAL_INIT, isolated_env, kill_leftovers, release, server_command

SOURCE = '''import os


def read_lines(path):
    """Return the lines of the file at path."""
    with open(path) as f:
        return f.read().splitlines()


def count_lines(path):
'''


def wait_for(nvim, lua: str, timeout: float = 240.0, what: str = ""):
    """Poll a Lua expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = nvim.exec_lua(f"return {lua}")
        if value:
            return value
        time.sleep(0.1)
    events = nvim.exec_lua("return require('starchat.completion').events")
    raise AssertionError(f"timed out waiting for {what or lua}; events: {events}")


@pytest.fixture(scope="module")
def editor(nvim, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nvim-inline")
    workspace = tmp / "project"
    workspace.mkdir()
    (workspace / ".git").mkdir()
    src = workspace / "lines.py"
    src.write_text(SOURCE)
    env = isolated_env(tmp)
    argv = ["env", "-i", *[f"{k}={v}" for k, v in env.items()],
            nvim, "--embed", "--headless", "-u", str(MINIMAL_INIT)]
    session = pynvim.attach("child", argv=argv)
    try:
        session.command(f"cd {workspace}")
        session.exec_lua(
            "require('starchat').setup({cmd = ..., notify = false,"
            " settings = {completion = {maxNewTokens = 24}, feedback = {enabled = true}}})",
            server_command(),
        )
        session.command(f"edit {src}")
        session.command("setlocal indentexpr= noautoindent nosmartindent")  # keys type exactly
        wait_for(session, "(vim.lsp.get_clients({name = 'starchat', bufnr = 0})[1] or {}).initialized",
                 60, "the server to start")
        session.data_dir = Path(env["STARCHAT_DATA_DIR"])
        yield session, Path(src)
    finally:
        try:
            session.command("qa!")
        except Exception:
            pass
        session.close()
        kill_leftovers(env["STARCHAT_RUNTIME_DIR"])
        release(env)


def events(nvim) -> list:
    return nvim.exec_lua("return require('starchat.completion').events")


def ghost(nvim) -> list:
    """The virtual text the plugin draws in the current buffer."""
    return nvim.exec_lua(
        "local c = require('starchat.completion')"
        " local marks = vim.api.nvim_buf_get_extmarks(0, c.ns, 0, -1, {details = true})"
        " return vim.tbl_map(function(m) return {m[2], m[3], m[4].virt_text[1][1]} end, marks)"
    )


def test_typing_shows_ghost_text_typing_on_cancels_and_tab_accepts_it(editor):
    nvim, src = editor
    nvim.command("normal! G")
    nvim.input("o    return len(rea")
    first = wait_for(nvim, "(function() for _, e in ipairs(require('starchat.completion').events) do"
                     " if e[1] == 'sent' then return e[2] end end end)()", 30, "a request")
    # The model is still loading or answering: typing on cancels that request.
    nvim.input("d_")
    shown = wait_for(nvim, "require('starchat.completion').shown(0)", 300, "a suggestion")
    log = events(nvim)
    assert ["cancelled", first] in log
    assert log.index(["cancelled", first]) < log.index(["shown", shown])
    sent = [e[1] for e in log if e[0] == "sent"]
    assert sent[-1] != first
    line = nvim.current.line
    assert line == "    return len(read_"
    row, col = nvim.current.window.cursor
    # Ghost text at the cursor, not in the buffer.
    assert ghost(nvim) == [[row - 1, col, shown.split("\n")[0]]]
    assert shown.strip() and "\n" not in shown  # mid-line: to the end of the line

    nvim.input("<Tab>")
    wait_for(nvim, "(function() for _, e in ipairs(require('starchat.completion').events) do"
             " if e[1] == 'accepted' then return true end end end)()", 10, "accept")
    assert nvim.current.line == "    return len(read_" + shown
    assert tuple(nvim.current.window.cursor) == (row, len("    return len(read_" + shown))
    assert ghost(nvim) == []
    nvim.input("<Esc>")
    wait_for(nvim, "vim.api.nvim_get_mode().mode == 'n'", 10)
    # The item's command ran on accept: the server logged the suggestion.
    assert ["command", "starchat.acceptCompletion"] in events(nvim)
    root = os.path.realpath(src.parent)
    deadline = time.monotonic() + 10
    while not (logs := list((nvim.data_dir / "feedback").glob(f"{src.parent.name}-*.jsonl"))):
        assert time.monotonic() < deadline, "no feedback log was written"
        time.sleep(0.1)
    (row,) = [json.loads(line) for line in logs[0].read_text().splitlines()]
    assert (row["kind"], row["workspace"], row["path"]) == ("completion", root, src.name)
    assert row["completion"] == shown and row["prefix"].endswith("\n    return len(read_")
    # :StarChatClearFeedback deletes it (through the server, which knows where it is).
    nvim.command("StarChatClearFeedback")
    deadline = time.monotonic() + 10
    while logs[0].exists():
        assert time.monotonic() < deadline, "the feedback log was not deleted"
        time.sleep(0.1)


def test_escape_dismisses_and_tab_without_a_suggestion_is_a_tab(editor):
    nvim, _ = editor
    nvim.command("normal! G")
    nvim.input("o    return len(read_")
    wait_for(nvim, "require('starchat.completion').shown(0)", 300, "a suggestion")
    nvim.input("<Esc>")
    wait_for(nvim, "vim.api.nvim_get_mode().mode == 'n'", 10)
    assert ghost(nvim) == [] and nvim.current.line == "    return len(read_"
    nvim.input("o<Tab>")
    wait_for(nvim, "vim.api.nvim_get_current_line() ~= ''", 10, "the tab")
    assert nvim.current.line == (" " * nvim.eval("&softtabstop") if nvim.eval("&expandtab") else "\t")
    nvim.input("<Esc>")
