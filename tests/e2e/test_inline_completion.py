"""``textDocument/inlineCompletion`` over real stdio, on the real worker and embedded model.

Shapes as an editor sees them (raw JSON), the range on the cursor's line, ``null`` for a
stale document version, the latest request per document winning, ``$/cancelRequest``, and
the prefix cache.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

from .conftest import CONFIG, capabilities, install_editor, open_document, raw_request

pytestmark = pytest.mark.asyncio(loop_scope="session")

SETTINGS = {"starchat": {"completion": {"maxNewTokens": 24}}}
CODE = '''import os


def read_lines(path):
    """Return the lines of the file at path."""
    with open(path) as f:
        return f.read().splitlines()


def count_lines(path):
    return len(read_'''
LINE = CODE.count("\n")
CURSOR = {"line": LINE, "character": len(CODE.rsplit("\n", 1)[-1])}


@pytest_lsp.fixture(config=CONFIG, scope="session")
async def lsp(lsp_client: LanguageClient, tmp_path_factory):
    """Our own server (completion settings of its own), on the e2e suite's shared worker."""
    root = tmp_path_factory.mktemp("inline")
    install_editor(lsp_client)
    result = await lsp_client.initialize_session(
        types.InitializeParams(capabilities=capabilities(), root_uri=root.as_uri(),
                               initialization_options=SETTINGS)
    )
    lsp_client.root = root  # type: ignore[attr-defined]
    lsp_client.init_result = result  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()



def new_document(client: LanguageClient, text: str = CODE) -> str:
    path = Path(client.root) / f"doc_{uuid.uuid4().hex[:8]}.py"  # type: ignore[attr-defined]
    return open_document(client, path, text)


def send(client: LanguageClient, uri: str, position=CURSOR, selected=None, msg_id=None, trigger=2):
    """Send an inlineCompletion request; returns (id, future of the raw JSON result)."""
    msg_id = msg_id or f"ic-{uuid.uuid4().hex}"
    context: dict = {"triggerKind": trigger}
    if selected is not None:
        context["selectedCompletionInfo"] = selected
    raw = {"textDocument": {"uri": uri}, "position": position, "context": context}
    params = client.protocol._converter.structure(raw, types.InlineCompletionParams)
    future = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
    client.protocol._result_types.pop(msg_id, None)  # keep the answer as raw JSON
    return msg_id, asyncio.wait_for(asyncio.wrap_future(future), 300)


def change(client: LanguageClient, uri: str, version: int, at: dict, text: str) -> None:
    client.versions[uri] = version  # type: ignore[attr-defined]
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(**at), end=types.Position(**at)), text=text)],
    ))


def item_of(result) -> dict:
    assert isinstance(result, list) and len(result) == 1, result
    return result[0]


async def test_capability_and_a_completion_on_the_cursor_line(lsp: LanguageClient):
    caps = lsp.init_result.capabilities  # type: ignore[attr-defined]
    assert caps.inline_completion_provider is not None
    uri = new_document(lsp)
    _, answer = send(lsp, uri)
    item = item_of(await answer)
    assert set(item) == {"insertText", "range"}
    text = item["insertText"]
    assert text.strip() and "\n" not in text  # mid-line: to the end of the line
    assert item["range"] == {"start": CURSOR, "end": CURSOR}
    # The same request again: the same (greedy) answer.
    _, again = send(lsp, uri)
    assert item_of(await again)["insertText"] == text

    # Typing the first characters of the suggestion: the rest, on the new cursor.
    typed = text[:2]
    change(lsp, uri, 2, CURSOR, typed)
    moved = {"line": LINE, "character": CURSOR["character"] + 2}
    _, rest = send(lsp, uri, moved)
    item = item_of(await rest)
    assert item["insertText"] == text[2:]
    assert item["range"] == {"start": moved, "end": moved}


async def test_invoked_request_gets_several_different_items(lsp: LanguageClient):
    # In a comment: room for more than one good continuation.
    text = CODE + "lines(path))\n\n\ndef parse_config(path):\n    # Read the"
    uri = new_document(lsp, text)
    cursor = {"line": text.count("\n"), "character": len(text.rsplit("\n", 1)[-1])}
    _, automatic = send(lsp, uri, cursor, trigger=2)
    greedy = item_of(await automatic)["insertText"]  # automatic: exactly one
    _, invoked = send(lsp, uri, cursor, trigger=1)
    items = await invoked
    assert isinstance(items, list) and 2 <= len(items) <= 3, items
    texts = [item["insertText"] for item in items]
    assert texts[0] == greedy  # the greedy answer first, then sampled alternatives
    assert len(set(texts)) == len(texts)  # no duplicates
    for item in items:
        assert set(item) == {"insertText", "range"}
        assert item["range"] == {"start": cursor, "end": cursor}
        assert item["insertText"].strip() and "\n" not in item["insertText"]  # mid-line: the rest of it
    # The same invoked request again: the same items (seeded sampling).
    _, again = send(lsp, uri, cursor, trigger=1)
    assert [i["insertText"] for i in await again] == texts
    # With invokedItems 1, an invoked request gets the greedy answer alone.
    lsp.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"starchat": {"completion": {"maxNewTokens": 24, "invokedItems": 1}}}))
    _, single = send(lsp, uri, cursor, trigger=1)
    assert item_of(await single)["insertText"] == greedy
    lsp.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=SETTINGS))


async def test_selected_completion_info_is_extended_over_its_range(lsp: LanguageClient):
    uri = new_document(lsp, CODE[: -len("read_")] + "re")  # an editor's menu offers "read_lines"
    start = {"line": LINE, "character": CURSOR["character"] - len("read_")}
    end = {"line": LINE, "character": start["character"] + 2}
    _, answer = send(lsp, uri, end, selected={"range": {"start": start, "end": end}, "text": "read_lines"})
    item = item_of(await answer)
    assert item["insertText"].startswith("read_lines") and len(item["insertText"]) > len("read_lines")
    assert item["range"] == {"start": start, "end": end}


async def test_an_edit_makes_the_answer_null(lsp: LanguageClient):
    uri = new_document(lsp)
    _, answer = send(lsp, uri)
    change(lsp, uri, 2, CURSOR, "t")  # the user typed on before the answer came
    assert await answer is None
    moved = {"line": LINE, "character": CURSOR["character"] + 1}
    _, fresh = send(lsp, uri, moved)
    assert item_of(await fresh)["range"]["start"] == moved


async def test_a_newer_request_cancels_the_older_one(lsp: LanguageClient):
    uri = new_document(lsp)
    _, older = send(lsp, uri)
    _, newer = send(lsp, uri)
    assert await older is None
    assert item_of(await newer)["insertText"].strip()
    # Another document is not affected by this one's requests.
    other = new_document(lsp)
    _, first = send(lsp, uri)
    _, second = send(lsp, other)
    assert item_of(await first) and item_of(await second)


async def test_cancel_request_is_honoured(lsp: LanguageClient):
    uri = new_document(lsp)
    msg_id, answer = send(lsp, uri)
    lsp.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
    with pytest.raises(JsonRpcException) as caught:
        await answer
    assert caught.value.code == types.LSPErrorCodes.RequestCancelled
    _, after = send(lsp, uri)  # the worker is free for the next one
    assert item_of(await after)["insertText"].strip()


async def test_disabled_gives_null_and_bad_settings_warn(lsp: LanguageClient):
    uri = new_document(lsp)
    lsp.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"starchat": {"completion": {"enabled": False, "maxNewTokens": "many"}}}))
    _, answer = send(lsp, uri)
    assert await answer is None
    warnings = [m.message for m in lsp.messages if m.type == types.MessageType.Warning]
    assert any("starchat.completion.maxNewTokens must be an integer" in w for w in warnings)
    lsp.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=SETTINGS))
    _, back = send(lsp, uri)
    assert item_of(await back)


async def served(client: LanguageClient, uri: str) -> list[tuple[str, str]]:
    """``starchat/completionStats``: (source, outcome) of each request for ``uri``, in order."""
    stats = await raw_request(client, "starchat/completionStats", None)
    return [(r.source, r.outcome) for r in stats.served if r.uri == uri]  # (pygls: attributes)


async def test_a_suggestion_typed_through_has_the_next_one_fetched_before_it_is_asked(lsp: LanguageClient):
    uri = new_document(lsp)
    _, answer = send(lsp, uri)
    text = item_of(await answer)["insertText"]
    change(lsp, uri, 2, CURSOR, text[:1])  # typing its first character: the rest, no model call
    _, rest = send(lsp, uri, {"line": LINE, "character": CURSOR["character"] + 1})
    assert item_of(await rest)["insertText"] == text[1:]
    assert await served(lsp, uri) == [("model", "answered"), ("cache", "answered")]

    # The rest put in (as an accept does): the suggestion ended its line, so the next line's
    # completion is fetched now, and the request that comes after Enter waits for it.
    change(lsp, uri, 3, {"line": LINE, "character": CURSOR["character"] + 1}, text[1:])
    change(lsp, uri, 4, {"line": LINE, "character": CURSOR["character"] + len(text)}, "\n")
    _, following = send(lsp, uri, {"line": LINE + 1, "character": 0})
    result = await following
    source, outcome = (await served(lsp, uri))[-1]
    assert (source, outcome) in {("prefetch", "answered"), ("prefetch", "empty")}
    assert (result is None) == (outcome == "empty")
    assert [s for s, _ in await served(lsp, uri)].count("model") == 1  # no second model call

    # A prefetch for a place the user did not go is dropped: a model call answers there.
    change(lsp, uri, 5, {"line": LINE + 1, "character": 0}, "x")
    _, elsewhere = send(lsp, uri, {"line": LINE + 1, "character": 1})
    await elsewhere
    assert (await served(lsp, uri))[-1][0] == "model"
