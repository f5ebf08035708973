"""``make demo``: a headless editor session against the real ``starchat lsp``.

Starts the server as an editor would (a subprocess on stdio), opens the shipped sample
``lsp_server/samples/buggy_stats.py``, lists the code actions for the ``average``
function, runs Explain and then Fix on it, and prints the streamed text as it arrives and
the ``workspace/applyEdit`` the server sends. This module is a program: it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import sys
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from . import commands


def show(*parts: object) -> None:
    """Write a line of the demo transcript to stdout (this program's own terminal, not LSP)."""
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


SAMPLE = Path(__file__).parent / "samples" / "buggy_stats.py"


def server_command() -> list[str]:
    """``starchat lsp`` with this interpreter."""
    return [sys.executable, "-m", "lsp_server", "lsp"]


class DemoEditor:
    """The parts of an editor the demo needs: progress display and applying edits."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.version = 1
        self.client = LanguageClient("starchat-demo", "0.1")
        self.streaming: set[Any] = set()
        # pygls stores attributes on handlers, so plain functions rather than bound methods.
        self.client.feature(types.PROGRESS)(lambda params: self.on_progress(params))
        self.client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)(lambda params: None)
        self.client.feature(types.WORKSPACE_APPLY_EDIT)(lambda params: self.on_apply_edit(params))
        self.client.feature(types.WINDOW_SHOW_MESSAGE)(
            lambda params: show(f"\n[server says] {params.message}")
        )

    def on_progress(self, params: types.ProgressParams) -> None:
        value = params.value if isinstance(params.value, dict) else {}
        kind, message = value.get("kind"), value.get("message") or ""
        if params.token in self.streaming:
            if kind == "report":
                sys.stdout.write(message)  # a delta: the text generated since the last report
                sys.stdout.flush()
            elif kind == "begin" and message:
                show(f"  ({message})")
            return
        # Server-created progress, e.g. "Loading model".
        text = value.get("title") or message
        show(f"[progress] {kind}: {text}")

    def on_apply_edit(self, params: types.ApplyWorkspaceEditParams):
        show("\n\n== workspace/applyEdit", f"({params.label})" if params.label else "")
        for change in params.edit.document_changes or []:
            if not isinstance(change, types.TextDocumentEdit):
                continue  # the server only sends text edits
            if change.text_document.version != self.version:
                show("   refused: the edit is for another version of the document")
                return types.ApplyWorkspaceEditResult(applied=False, failure_reason="stale")
            for edit in change.edits:
                if not isinstance(edit, (types.TextEdit, types.AnnotatedTextEdit)):
                    continue
                r = edit.range
                show(f"   replace lines {r.start.line + 1}-{r.end.line} with:")
                show("   | " + "\n   | ".join(edit.new_text.rstrip("\n").splitlines()))
                before = self.text
                self.text = apply_text_edit(self.text, r, edit.new_text)
                self.version += 1
                diff = difflib.unified_diff(
                    before.splitlines(keepends=True),
                    self.text.splitlines(keepends=True),
                    "buggy_stats.py (before)",
                    "buggy_stats.py (after)",
                )
                show("\n== resulting diff\n" + "".join(diff))
        return types.ApplyWorkspaceEditResult(applied=True)


def apply_text_edit(text: str, rng: types.Range, new_text: str) -> str:
    """Apply one edit (ASCII sample, so UTF-16 columns equal str indices)."""
    lines = text.splitlines(keepends=True)

    def offset(pos: types.Position) -> int:
        return sum(len(line) for line in lines[: pos.line]) + pos.character

    return text[: offset(rng.start)] + new_text + text[offset(rng.end) :]


async def run_command(editor: DemoEditor, command: str, argument: dict) -> Any:
    """executeCommand with our own workDoneToken, so the deltas stream to stdout."""
    token = f"demo-{command}"
    editor.streaming.add(token)
    started = time.perf_counter()
    result = await editor.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=command, arguments=[argument], work_done_token=token)
    )
    show(f"\n   [{command} answered in {time.perf_counter() - started:.1f} s]")
    return result


async def main_async(max_new_tokens: int) -> int:
    text = SAMPLE.read_text()
    editor = DemoEditor(text)
    client = editor.client
    show("== starting:", " ".join(server_command()))
    await client.start_io(*server_command())
    started = time.perf_counter()
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(
                window=types.WindowClientCapabilities(work_done_progress=True),
                workspace=types.WorkspaceClientCapabilities(
                    apply_edit=True,
                    workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True),
                ),
            ),
            root_uri=SAMPLE.parent.as_uri(),
            initialization_options={"starchat": {"generation": {"max_new_tokens": max_new_tokens}}},
        )
    )
    show(f"== initialize answered in {time.perf_counter() - started:.2f} s")
    client.initialized(types.InitializedParams())
    uri = SAMPLE.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
        )
    )
    selection = {"start": {"line": 3, "character": 0}, "end": {"line": 9, "character": 0}}
    show("== selection (lines 4-9):\n" + "".join(text.splitlines(keepends=True)[3:9]))
    actions = await client.protocol.send_request_async(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(start=types.Position(3, 0), end=types.Position(9, 0)),
            context=types.CodeActionContext(diagnostics=[]),
        ),
    )
    show("== code actions:")
    for action in actions or []:
        show(f"   - {action.title}")

    show(f"\n== {commands.EXPLAIN} (streamed):")
    explained = await run_command(
        editor, commands.EXPLAIN, {"textDocument": {"uri": uri}, "range": selection}
    )
    show(f"\n== {commands.FIX} (streamed):")
    fixed = await run_command(
        editor,
        commands.FIX,
        {"textDocument": {"uri": uri}, "range": selection},
    )
    show(f"== fix result: applied={fixed.get('applied')} {fixed.get('message', '')}")
    if explained.get("truncated") or fixed.get("truncated"):
        show("== truncated:", explained.get("truncated"), fixed.get("truncated"))

    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m lsp_server.demo", description=__doc__)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(main_async(args.max_new_tokens))


if __name__ == "__main__":
    sys.exit(main())
