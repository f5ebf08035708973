"""A real Emacs (``emacs --batch -Q``) with Eglot against ``starchat lsp`` and the embedded model.

Two Emacs sessions run editors/emacs/tests/e2e.el (one server each, one shared worker):
- "bare": only an ``eglot-server-programs`` entry, Eglot's defaults (10 s request timeout,
  edits confirmed): what a new user has. Code actions, Fix, Explain's answer as a message.
- "snippet": editors/emacs/starchat-eglot.el, the file docs/editors.md tells users to load:
  Explain's conversation document opened in a buffer, and a cancel mid-answer.
Without Emacs or Eglot the tests are skipped with the reason (``make test`` installs both
on Debian when it runs as root).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from nvim_harness import ROOT, isolated_env, kill_leftovers, release

EMACS_DIR = ROOT / "editors" / "emacs"
SNIPPET = EMACS_DIR / "starchat-eglot.el"
DRIVER = EMACS_DIR / "tests" / "e2e.el"
LSP_MODE_SNIPPET = EMACS_DIR / "starchat-lsp-mode.el"
LSP_MODE_DRIVER = EMACS_DIR / "tests" / "e2e-lsp-mode.el"
ELPA = Path("/usr/share/emacs/site-lisp/elpa")

SOURCE = '''import math


def circle_area(radius):
    """Return the area of a circle."""
    return math.pi * radius ** 2


print(circle_area(2.0))
'''

BROKEN = '''def greet(name)
    print("Hello, " + name
'''


def _missing(env: dict[str, str], package: str = "eglot") -> str | None:
    if shutil.which("emacs") is None:
        return "emacs is not installed (Debian: apt-get install emacs-nox elpa-eglot)"
    probe = subprocess.run(
        ["emacs", "--batch", "-Q", "--eval",
         f'(progn (dolist (d (file-expand-wildcards "{ELPA}/*")) (add-to-list (quote load-path) d))'
         f" (require (quote {package})))"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    if probe.returncode != 0:
        return f"{package} is not available to emacs: {probe.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def emacs_env(tmp_path_factory):
    """Private runtime/data dirs and a project; stops the worker the servers started."""
    tmp = tmp_path_factory.mktemp("emacs-e2e")
    workspace = tmp / "project"
    (workspace / ".git").mkdir(parents=True)  # the project root Eglot finds
    env = isolated_env(tmp)  # Emacs's own TMPDIR and HOME (user-emacs-directory, eln cache) too
    # `starchat` on PATH, as the docs' snippets expect it.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    why = _missing(env)
    if why:
        release(env)
        pytest.skip(why)
    yield tmp, workspace, env
    kill_leftovers(env["STARCHAT_RUNTIME_DIR"])
    release(env)


def run_emacs(emacs_env, mode: str) -> dict:
    """Run the driver of ``mode`` (bare, snippet: Eglot; lsp-mode) and load its results."""
    tmp, workspace, env = emacs_env
    src = workspace / f"area_{mode.replace('-', '_')}.py"
    src.write_text(SOURCE)
    fix_src = workspace / f"greet_{mode.replace('-', '_')}.py"
    fix_src.write_text(BROKEN)
    out = tmp / f"results-{mode}.json"
    lsp_mode = mode == "lsp-mode"
    env = dict(env, STARCHAT_TEST_MODE=mode,
               STARCHAT_TEST_SNIPPET=str(LSP_MODE_SNIPPET if lsp_mode else SNIPPET),
               STARCHAT_TEST_FILE=str(src), STARCHAT_TEST_FIX_FILE=str(fix_src),
               STARCHAT_TEST_OUT=str(out), STARCHAT_TEST_MAX_TOKENS="32",
               STARCHAT_TEST_HOME=str(tmp))
    stderr = ""
    try:
        proc = subprocess.run(
            ["emacs", "--batch", "-Q", "-l", str(LSP_MODE_DRIVER if lsp_mode else DRIVER)],
            cwd=workspace, env=env, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=1500,
        )
        stderr = proc.stderr
    except subprocess.TimeoutExpired as exc:
        stderr = f"timed out: {exc.stderr!r}"
    assert out.exists(), f"emacs wrote no results: {stderr[-3000:]}"
    results = json.loads(out.read_text())
    results["_stderr"] = stderr
    results["_data"] = Path(env["STARCHAT_DATA_DIR"])
    return results


@pytest.fixture(scope="module")
def bare(emacs_env) -> dict:
    return run_emacs(emacs_env, "bare")


@pytest.fixture(scope="module")
def snippet(emacs_env) -> dict:
    return run_emacs(emacs_env, "snippet")


@pytest.fixture(scope="module")
def lsp_mode(emacs_env) -> dict:
    why = _missing(emacs_env[2], "lsp-mode")
    if why:
        pytest.skip(f"{why} (Debian: apt-get install elpa-lsp-mode)")
    return run_emacs(emacs_env, "lsp-mode")


def scenario(results: dict, name: str) -> dict:
    r = results.get(name)
    logs = json.dumps(results.get("logs"))[-4000:]
    assert r is not None, f"scenario {name} did not run: {results['_stderr'][-2000:]}"
    assert r["ok"] is True, f"{r.get('error')}\n{logs}"
    return r


def stored_reply(results: dict, conversation_id: str) -> str | None:
    db = sqlite3.connect(results["_data"] / "conversations.sqlite3")
    try:
        row = db.execute("SELECT content FROM messages WHERE conversation_id = ? AND "
                         "role = 'assistant'", (conversation_id,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def test_eglot_connects_and_lists_the_code_actions(bare):
    attach = scenario(bare, "attach")
    assert attach["managed"] is True and attach["major_mode"] == "python-mode"
    assert attach["server_name"] == "starchat-lsp"
    assert {"starchat.explain", "starchat.fix", "starchat.chat"} <= set(attach["commands"])
    titles = scenario(bare, "actions")["titles"]
    assert titles[:2] == ["StarChat: Explain selection", "StarChat: Fix selection"]
    assert "StarChat: Add docstring" in titles


def test_fix_is_applied_without_any_request_timing_out(bare):
    r = scenario(bare, "fix")
    assert r["timeout"] == 10  # Eglot's default, untouched
    assert r["call_error"] is None, r["call_error"]  # e.g. "Timed out"
    assert r["answer"]["state"] == "started"
    assert r["changed"] is True
    # Eglot asked, as it does by default, and the user said yes.
    assert len(r["prompts"]) == 1 and "Server wants to edit" in r["prompts"][0]
    assert "def greet(name):" in r["after"]
    assert stored_reply(bare, r["answer"]["conversationId"])


def test_explain_without_the_snippet_comes_as_a_message(bare):
    r = scenario(bare, "explain")
    assert r["call_error"] is None and r["answer"]["state"] == "started"
    reply = stored_reply(bare, r["answer"]["conversationId"])
    assert reply and len(reply.split()) >= 3
    assert "StarChat: Explain selection (also in " in r["messages"]
    assert reply.strip() in r["messages"]
    assert r["file_answer"].strip() == reply.strip()  # the document is written anyway


def test_explain_opens_the_conversation_document(snippet):
    r = scenario(snippet, "explain")
    assert r["call_error"] is None and r["answer"]["state"] == "started"
    assert r["shown"] is True, "the server's window/showDocument opened no buffer"
    assert r["auto_revert"] is True
    reply = stored_reply(snippet, r["answer"]["conversationId"])
    assert reply and len(reply.split()) >= 3
    text = r["buffer_text"]
    assert "Explain what this python code does" in text
    assert text.endswith("## StarChat\n\n" + reply.rstrip() + "\n")
    assert "still writing" not in text
    # No fallback message: the document was shown at once.
    assert "answering in the background" not in r["messages"], r["messages"]


def test_cancel_stops_the_answer_and_frees_the_worker(snippet):
    r = scenario(snippet, "cancel")
    assert r["answer"]["state"] == "started"
    assert r["got_text"] is True, "no text arrived before the cancel"
    assert r["stopped"] is True, "the answer was not stopped"
    assert r["after_stop"].rstrip().endswith("_[stopped]_")
    assert r["later"] == r["after_stop"], "text kept arriving after the cancel"
    assert stored_reply(snippet, r["answer"]["conversationId"]) is None
    assert r["next_done"] is True
    assert r["next_answer"].strip()


def test_the_server_shuts_down_with_emacs(bare, snippet):
    assert scenario(bare, "shutdown")["stopped"] is True
    assert scenario(snippet, "shutdown")["stopped"] is True


def test_lsp_mode_lists_the_actions_and_applies_fix_without_timing_out(lsp_mode):
    assert "starchat" in scenario(lsp_mode, "attach")["servers"]
    titles = scenario(lsp_mode, "actions")["titles"]
    assert "StarChat: Explain selection" in titles and "StarChat: Fix selection" in titles
    r = scenario(lsp_mode, "fix")
    assert r["timeout"] == 10  # lsp-response-timeout, lsp-mode's default
    assert r["call_error"] is None, r["call_error"]
    assert r["state"] == "started"
    assert r["changed"] is True and "def greet(name):" in r["after"]
    assert stored_reply(lsp_mode, r["conversation"])


def test_lsp_mode_gets_explain_as_a_message(lsp_mode):
    r = scenario(lsp_mode, "explain")
    assert r["call_error"] is None and r["state"] == "started"
    reply = stored_reply(lsp_mode, r["conversation"])
    assert reply and reply.strip() in r["messages"]
    assert scenario(lsp_mode, "shutdown")["stopped"] is True
