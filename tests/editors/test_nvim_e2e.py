"""Headless Neovim + starchat.nvim + the real language server + the embedded model.

One Neovim session runs every scenario of editors/nvim/tests/e2e.lua (so the model loads
once); each test below asserts on what one scenario recorded.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from nvim_harness import (
    MINIMAL_INIT,
    NVIM_PLUGIN,
    isolated_env,
    kill_leftovers,
    release,
    server_command,
)

SOURCE = '''import math


def circle_area(radius):
    """Return the area of a circle."""
    return math.pi * radius ** 2


print(circle_area(2.0))
'''

BROKEN = '''def greet(name)
    print("Hello, " + name
'''


@pytest.fixture(scope="module")
def session(nvim, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("nvim-e2e")
    workspace = tmp / "project"
    workspace.mkdir()
    (workspace / ".git").mkdir()  # a root marker: the server's workspace is this folder
    src = workspace / "area.py"
    src.write_text(SOURCE)
    fix_src = workspace / "greet.py"
    fix_src.write_text(BROKEN)
    out = tmp / "results.json"
    env = isolated_env(tmp)
    env.update(
        STARCHAT_TEST_CMD=json.dumps(server_command()),
        STARCHAT_TEST_FILE=str(src),
        STARCHAT_TEST_FIX_FILE=str(fix_src),
        STARCHAT_TEST_OUT=str(out),
        STARCHAT_TEST_MAX_TOKENS="32",
    )
    script = NVIM_PLUGIN / "tests" / "e2e.lua"
    stderr = ""
    try:
        proc = subprocess.run(
            [nvim, "--headless", "-u", str(MINIMAL_INIT), "-c", f"luafile {script}"],
            cwd=workspace, env=env, capture_output=True, text=True, timeout=420,
        )
        stderr = proc.stderr
    except subprocess.TimeoutExpired as exc:
        # Keep what the finished scenarios recorded; the rest fail as "did not run".
        stderr = f"timed out: {exc.stderr!r}"
    finally:
        kill_leftovers(env["STARCHAT_RUNTIME_DIR"])
        release(env)
    assert out.exists(), f"nvim wrote no results: {stderr[-2000:]}"
    results = json.loads(out.read_text())
    assert "runner_error" not in results, results["runner_error"]
    results["_src"] = str(src)
    return results


def scenario(session: dict, name: str) -> dict:
    r = session.get(name)
    assert r is not None, f"scenario {name} did not run"
    assert r["ok"], r.get("error")
    return r


def test_server_attaches_as_starchat(session):
    r = scenario(session, "attach")
    assert r["filetype"] == "python"
    assert r["attached"] is True
    assert r["client_name"] == "starchat"
    assert {"starchat.explain", "starchat.fix", "starchat.chat"} <= set(r["commands"])


def test_explain_range_streams_into_chat_buffer(session):
    r = scenario(session, "explain")
    assert r["done"], "Explain did not finish"
    assert r.get("err") is None
    assert r["chat_name"] == f"starchat://chat/{r['conversation']}"
    assert r["chat_filetype"] == "markdown"
    # Streamed, not dumped at the end: several deltas whose concatenation is the reply.
    assert r["deltas"] >= 2
    assert r["joined_deltas"] == r["reply"]
    assert len(r["reply"].strip()) > 20
    assert r["chat_text"].endswith(r["reply"])
    assert "Explain `area.py` lines 4-6" in r["chat_text"]
    # The source window keeps the focus and the event loop never stalls while tokens arrive.
    assert r["current_buffer_is_source"]
    assert r["first_delta_ms"] < r["total_ms"]
    assert r["max_ui_gap_ms"] < 500, r["max_ui_gap_ms"]


def test_chat_message_continues_the_conversation(session):
    explain = scenario(session, "explain")
    r = scenario(session, "chat")
    assert r["done"] and r.get("err") is None and r["reply"]
    # Same conversation as the Explain before it, same buffer, both turns in it.
    assert r["conversation"] == explain["conversation"]
    assert r["chat_name"] == explain["chat_name"]
    assert "## You\n\nWhat does circle_area return?\n\n## StarChat\n\n" in r["chat_text"]
    assert "Explain `area.py` lines 4-6" in r["chat_text"]
    assert r["chat_window_focused"]


def test_fix_changes_the_source_buffer(session):
    r = scenario(session, "fix")
    assert r["done"] and r.get("err") is None
    assert r["applied"] is True, r["reply"]
    assert r["after"] != r["before"]
    assert "def greet(name):" in "\n".join(r["after"])


def test_code_action_menu_runs_explain_through_the_plugin(session):
    r = scenario(session, "code_action")
    assert "StarChat: Explain selection" in r["titles"]
    assert "StarChat: Fix selection" in r["titles"]
    assert r["started"] and r["done"]
    assert r["command"] == "starchat.explain"
    assert r.get("err") is None and r["reply"]
    assert r["streamed"] >= 1


def test_stop_cancels_the_running_request(session):
    r = scenario(session, "stop")
    assert r["got_delta"]
    assert r["cancelled"] and r["done_at_once"]
    assert r["server_ended"], "the server never ended the progress after $/cancelRequest"
    assert r["end_ms"] < 3000, r["end_ms"]
    assert r["deltas_later"] == r["deltas_at_stop"], "text kept arriving after :StarChatStop"
    assert "_[stopped]_" in r["chat_text"]
    # The worker is free again: the next request finishes promptly.
    assert r["next_done"] and r.get("next_err") is None and r["next_reply"]


def test_checkhealth_passes(session):
    r = scenario(session, "health")
    text = "\n".join(r["lines"])
    assert "OK Neovim 0." in text
    assert "OK server starts: starchat" in text
    assert "OK model reachable: default" in text
    assert "ERROR" not in text, text
