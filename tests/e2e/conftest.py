"""One real StarChat server subprocess (and one shared worker) for the e2e tests.

Nothing touches the user's home: runtime (worker socket) and data (conversations) live in
private temp dirs, removed (workers stopped first) when the session ends. STARCHAT_CACHE_DIR
stays as the user has it, so the converted model is loaded from the shared cache (~1 s)
after the first time.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from lsp_server import commands

SAMPLE = Path(__file__).resolve().parents[2] / "lsp_server" / "samples" / "buggy_stats.py"
SERVER_COMMAND = [sys.executable, "-m", "lsp_server", "lsp"]
# Short answers keep the suite fast; greedy so runs are repeatable.
SETTINGS = {"starchat": {"generation": {"max_new_tokens": 64, "temperature": 0.0}}}

# Named here, created by the servers that use it, removed by _e2e_tmp: a run that only
# collects these modules leaves nothing behind.
_TMP = Path(tempfile.gettempdir()) / f"starchat-e2e-{uuid.uuid4().hex[:8]}"
ENV = {
    **os.environ,
    "STARCHAT_RUNTIME_DIR": str(_TMP / "run"),
    "STARCHAT_DATA_DIR": str(_TMP / "data"),
    "PYTHONUNBUFFERED": "1",
}
CONFIG = ClientServerConfig(server_command=SERVER_COMMAND, server_env=ENV)


def capabilities() -> types.ClientCapabilities:
    """An editor that offers progress, versioned workspace edits and pull configuration."""
    return types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        workspace=types.WorkspaceClientCapabilities(
            apply_edit=True,
            configuration=True,
            workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True),
        ),
    )


def install_editor(client: LanguageClient) -> None:
    """Answer workspace/applyEdit like an editor: refuse an edit for another version."""
    client.applied_edits = []  # type: ignore[attr-defined]
    client.versions = {}  # type: ignore[attr-defined]

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams):
        for change in params.edit.document_changes or []:
            current = client.versions.get(change.text_document.uri)
            if current != change.text_document.version:
                return types.ApplyWorkspaceEditResult(
                    applied=False, failure_reason="document version changed"
                )
        client.applied_edits.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)


async def start_session(client: LanguageClient, root: Path) -> types.InitializeResult:
    """initialize + initialized with our settings."""
    install_editor(client)
    return await client.initialize_session(
        types.InitializeParams(
            capabilities=capabilities(),
            root_uri=root.as_uri(),
            initialization_options=SETTINGS,
        )
    )


def open_document(client: LanguageClient, path: Path, text: str | None = None, version: int = 1):
    """didOpen a file (its text from disk unless given)."""
    uri = path.as_uri()
    client.versions[uri] = version  # type: ignore[attr-defined]
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri,
                language_id="python",
                version=version,
                text=path.read_text() if text is None else text,
            )
        )
    )
    return uri


def rng(start_line: int, end_line: int, end_char: int = 0) -> dict:
    """A range as command arguments carry it."""
    return {
        "start": {"line": start_line, "character": 0},
        "end": {"line": end_line, "character": end_char},
    }


@pytest.fixture(scope="session", autouse=True)
def _e2e_tmp():
    """Stop the workers of the e2e servers and remove their temp dirs after the session."""
    from tests.cleanup import stop_workers

    yield _TMP
    if _TMP.exists():
        stop_workers(_TMP)
        shutil.rmtree(_TMP, ignore_errors=True)


@pytest_lsp.fixture(config=CONFIG, scope="session")
async def client(lsp_client: LanguageClient):
    """The shared server, initialized in the repo root with the sample file open."""
    await start_session(lsp_client, SAMPLE.parents[2])
    open_document(lsp_client, SAMPLE)
    yield
    await lsp_client.shutdown_session()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return Path(ENV["STARCHAT_DATA_DIR"])


async def raw_request(client: LanguageClient, method: str, params) -> object:
    """Send a request and return its result as plain JSON, as an editor would see it.

    lsprotocol's client-side hook turns every CodeAction that has a ``command`` into a
    ``Command`` (with the object stringified), so code actions are read raw here.
    """
    msg_id = f"raw-{uuid.uuid4().hex}"
    future = client.protocol.send_request(method, params, msg_id=msg_id)
    client.protocol._result_types.pop(msg_id, None)
    return await asyncio.wrap_future(future)


async def code_actions(client: LanguageClient, start: int, end: int, diagnostics=(), only=None):
    """``textDocument/codeAction`` on lines [start, end) of the sample, as JSON."""
    params = types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=SAMPLE.as_uri()),
        range=types.Range(start=types.Position(start, 0), end=types.Position(end, 0)),
        context=types.CodeActionContext(diagnostics=list(diagnostics), only=only),
    )
    return await raw_request(client, types.TEXT_DOCUMENT_CODE_ACTION, params)


def set_max_new_tokens(client: LanguageClient, value: int) -> None:
    """Change the server's generation settings (applied before the requests sent after it)."""
    generation = dict(SETTINGS["starchat"]["generation"], max_new_tokens=value)
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"starchat": {"generation": generation}})
    )


def send_explain(client: LanguageClient, token: str, msg_id: str):
    """Explain lines 3-9 of the sample with our own request id; returns the response future."""
    client.progress_reports.setdefault(token, [])  # pytest-lsp warns about unseen tokens
    return client.protocol.send_request(
        types.WORKSPACE_EXECUTE_COMMAND,
        types.ExecuteCommandParams(
            command=commands.EXPLAIN,
            arguments=[{"textDocument": {"uri": SAMPLE.as_uri()}, "range": rng(3, 9)}],
            work_done_token=token,
        ),
        msg_id=msg_id,
    )


async def first_delta(client: LanguageClient, token, timeout: float = 300) -> None:
    """Wait for the first streamed delta on ``token``; the limit only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not any(isinstance(v, types.WorkDoneProgressReport) and v.message
                  for v in client.progress_reports.get(token, [])):
        if time.monotonic() > deadline:
            raise AssertionError(f"no delta arrived in {timeout:.0f} s")
        await asyncio.sleep(0.02)
