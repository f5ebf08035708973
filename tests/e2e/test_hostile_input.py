"""One regression test per hostile-input example of issue 12 (point 5), over raw stdio.

Each test talks to the real ``starchat lsp`` subprocess through ``rawlsp`` (our own
framer) and never reaches a model: the settings name a worker socket that does not exist.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lsp_server import commands

from .rawlsp import RawServer, encode, frame

INVALID_REQUEST, PARSE_ERROR, INVALID_PARAMS = -32600, -32700, -32602
SERVER_NOT_INITIALIZED, INTERNAL_ERROR, METHOD_NOT_FOUND = -32002, -32603, -32601
DOC_TEXT = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def server() -> Iterator[RawServer]:
    """One initialized server with a document open, shared by the tests that do not end it."""
    with RawServer() as raw:
        raw.initialize()
        raw.notify("textDocument/didOpen", {"textDocument": {
            "uri": doc_uri(raw), "languageId": "python", "version": 1, "text": DOC_TEXT}})
        yield raw
        assert not raw.tracebacks_sent(), raw.tracebacks_sent()


def doc_uri(raw: RawServer) -> str:
    return (raw.workspace / "add.py").as_uri()


_sentinels = iter(range(10**6))


def answers_to_raw(raw: RawServer, body: bytes) -> list[dict]:
    """Send ``body`` as one frame and return every response it got.

    A sentinel request (answered at once with MethodNotFound) follows it; the server
    handles frames in order, so what came before the sentinel's answer is ours.
    """
    start = len(raw.frames)
    raw.write(frame(body))
    sentinel = f"sentinel-{next(_sentinels)}"
    raw.request(sentinel, "starchat/sentinel", {})
    between = raw.messages()[start:]
    mine = []
    for message in between:
        if isinstance(message, dict) and message.get("id") == sentinel:
            break
        if "method" not in message:
            mine.append(message)
    return mine


def the_error(answers: list[dict], msg_id=None) -> dict:
    """The one error answer among ``answers``, with ``msg_id``."""
    assert len(answers) == 1, answers
    answer = answers[0]
    assert answer["id"] == msg_id and type(answer["id"]) is type(msg_id), answer
    assert answer["jsonrpc"] == "2.0" and "result" not in answer
    assert answer["error"]["message"].endswith("."), answer  # a sentence
    assert "data" not in answer["error"]
    return answer["error"]


def command(raw: RawServer, msg_id, name: str, arguments, **extra) -> dict:
    return raw.request(msg_id, "workspace/executeCommand",
                       {"command": name, "arguments": arguments, **extra})


# -- ids --------------------------------------------------------------------------------

def test_id_1e400_is_an_invalid_request_answered_with_id_null(server):
    answers = answers_to_raw(server, b'{"jsonrpc": "2.0", "id": 1e400, "method": "shutdown"}')
    assert the_error(answers)["code"] == INVALID_REQUEST
    # the raw frame holds no Infinity (strict parsing above would have failed anyway)
    assert all(b"Infinity" not in body for body in server.frames)
    # and the server did not shut down
    assert "result" in command(server, "after-1e400", commands.LIST_CONVERSATIONS, [{}])


@pytest.mark.parametrize("bad_id", [{"a": 1}, [1, 2], True, 1.5, 100.0])
def test_object_array_bool_and_float_ids_are_invalid_requests(server, bad_id):
    body = encode({"jsonrpc": "2.0", "id": bad_id, "method": "workspace/executeCommand",
                   "params": {"command": commands.LIST_CONVERSATIONS}})
    error = the_error(answers_to_raw(server, body))
    assert error["code"] == INVALID_REQUEST
    assert "id must be an integer or a string" in error["message"]


def test_a_request_nested_in_a_notification_is_not_answered(server):
    nested = {"jsonrpc": "2.0", "id": "nested-77", "method": "textDocument/codeAction",
              "params": {}}
    body = encode({"jsonrpc": "2.0", "method": "$/starchat/whatever",
                   "params": {"inner": nested, "list": [nested]}})
    assert answers_to_raw(server, body) == []
    assert server.answers_to("nested-77") == []


# -- framing ----------------------------------------------------------------------------

def test_a_body_that_is_not_utf8_is_a_parse_error(server):
    error = the_error(answers_to_raw(server, b'{"jsonrpc": "2.0", "id": 5, "method": "\xff\xfe"}'))
    assert error["code"] == PARSE_ERROR and "not UTF-8" in error["message"]


@pytest.mark.parametrize(("body", "answer_id", "words"), [
    (b"{}", None, '"jsonrpc": "2.0"'),
    (b"1", None, "must be a JSON object"),
    (b'"hello"', None, "must be a JSON object"),
    (b'{"jsonrpc": "1.0", "id": 31, "method": "shutdown"}', 31, '"jsonrpc": "2.0"'),
    (b'{"id": 32, "method": "shutdown"}', 32, '"jsonrpc": "2.0"'),
    (b'{"jsonrpc": "2.0", "id": 33}', 33, "needs a method"),
    (b'{"jsonrpc": "2.0", "id": 34, "method": 7}', 34, "method must be"),
    (b'{"jsonrpc": "2.0", "id": 35, "method": "shutdown", "params": 3}', 35, "params"),
    (b'[{"jsonrpc": "2.0", "id": 36, "method": "shutdown"}, '
     b'{"jsonrpc": "2.0", "id": 37, "method": "shutdown"}]', None, "Batches"),
    (b"[]", None, "Batches"),
])
def test_what_is_not_one_jsonrpc_message_is_answered_once_with_invalid_request(
    server, body, answer_id, words
):
    error = the_error(answers_to_raw(server, body), answer_id)
    assert error["code"] == INVALID_REQUEST and words in error["message"]
    assert server.answers_to(36) == [] and server.answers_to(37) == []


@pytest.mark.parametrize("header", [b"content-length: %d", b"Content-Length:%d", b"CONTENT-LENGTH :  %d",
                                    b"content-length:%d\r\nContent-Type: application/vscode-jsonrpc"])
def test_header_names_are_case_insensitive_and_the_space_optional(server, header):
    msg_id = f"header-{header.decode()[:15]}"
    body = encode({"jsonrpc": "2.0", "id": msg_id, "method": "workspace/executeCommand",
                   "params": {"command": commands.LIST_CONVERSATIONS}})
    server.write(header % len(body) + b"\r\n\r\n" + body)
    answer = server.wait_for(lambda m: m.get("id") == msg_id)
    assert "conversations" in answer["result"]


def test_a_body_over_the_size_cap_is_refused_with_id_null_and_not_held(monkeypatch):
    monkeypatch.setenv("STARCHAT_LSP_MAX_MESSAGE_BYTES", "4096")
    with RawServer() as raw:
        raw.initialize()
        padding = "x" * (3 << 20)  # 3 MiB: read in pieces and dropped
        big = encode({"jsonrpc": "2.0", "id": "big", "method": "workspace/executeCommand",
                      "params": {"command": commands.LIST_CONVERSATIONS, "arguments": [{"pad": padding}]}})
        error = the_error(answers_to_raw(raw, big))
        assert error["code"] == INVALID_REQUEST and "larger than this server takes (4096 bytes)" in error["message"]
        assert raw.answers_to("big") == []
        answer = command(raw, "after-big", commands.LIST_CONVERSATIONS, [{}])  # the stream is still in step
        assert "conversations" in answer["result"]


def test_nan_is_not_json(server):
    body = b'{"jsonrpc": "2.0", "id": 38, "method": "shutdown", "params": {"x": NaN}}'
    assert the_error(answers_to_raw(server, body))["code"] == PARSE_ERROR


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_params_nested_5000_deep_get_an_error_with_their_id(server):
    body = (b'{"jsonrpc": "2.0", "id": "deep", "method": "workspace/executeCommand", '
            b'"params": {"command": "starchat.listConversations", "arguments": [{"x": '
            + _nested(5000) + b"}]}}")
    error = the_error(answers_to_raw(server, body), "deep")
    assert error["code"] == INVALID_REQUEST and "nested too deeply" in error["message"]
    assert "RecursionError" not in server.stderr_tail(20000)


def test_params_nested_900_deep_are_fine(server):
    body = (b'{"jsonrpc": "2.0", "id": "deep-900", "method": "workspace/executeCommand", '
            b'"params": {"command": "starchat.listConversations", "arguments": [{"x": '
            + _nested(900) + b"}]}}")
    server.write(frame(body))
    answer = server.wait_for(lambda m: m.get("id") == "deep-900")
    assert "conversations" in answer["result"]


# -- lifecycle --------------------------------------------------------------------------

def test_requests_before_initialize_get_server_not_initialized():
    with RawServer() as raw:
        answer = raw.request("early", "workspace/executeCommand",
                             {"command": commands.LIST_CONVERSATIONS, "arguments": [{}]})
        assert answer["error"]["code"] == SERVER_NOT_INITIALIZED
        assert "send initialize first" in answer["error"]["message"]
        assert "data" not in answer["error"]
        # a notification before initialize is dropped, not answered
        raw.notify("textDocument/didOpen", {"textDocument": {
            "uri": "file:///early.py", "languageId": "python", "version": 1, "text": "x"}})
        assert "result" in raw.initialize()
        assert raw.answers_to("early") == [answer]
        assert not raw.tracebacks_sent()


def test_requests_after_shutdown_are_invalid_and_exit_then_ends_with_code_0():
    with RawServer() as raw:
        raw.initialize()
        assert raw.request(1, "shutdown")["result"] is None
        late = command(raw, 2, commands.LIST_CONVERSATIONS, [{}])
        assert late["error"]["code"] == INVALID_REQUEST
        assert "shut down" in late["error"]["message"]
        raw.notify("exit")
        assert raw.exit_code() == 0


def test_exit_without_shutdown_ends_with_code_1():
    with RawServer() as raw:
        raw.initialize()
        raw.notify("exit")
        assert raw.exit_code() == 1


def test_a_second_initialize_is_refused_and_open_documents_stay(server):
    again = server.request("init-again", "initialize", {
        "processId": None, "rootUri": None, "capabilities": {}})
    assert again["error"]["code"] == INVALID_REQUEST
    assert "only once" in again["error"]["message"]
    # The document opened at the start is still there: the range is checked against it.
    answer = command(server, "still-open", commands.EXPLAIN, [{
        "textDocument": {"uri": doc_uri(server)},
        "range": {"start": {"line": 0, "character": 0}, "end": {"line": 40, "character": 0}}}])
    assert answer["error"]["code"] == INVALID_PARAMS
    assert "outside the document (2 lines)" in answer["error"]["message"]


# -- arguments --------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "argument", "field"), [
    (commands.NEW_CONVERSATION, {"title": "\ud800"}, "title"),
    (commands.CHAT, {"message": "hi \ud800"}, "message"),
    (commands.DELETE_CONVERSATION, {"conversationId": "\udfff"}, "conversationId"),
    (commands.EXPORT_CONVERSATIONS, {"path": "out\ud800.jsonl"}, "path"),
])
def test_a_lone_surrogate_is_invalid_params(server, name, argument, field):
    answer = command(server, f"surrogate-{field}", name, [argument])
    assert answer["error"]["code"] == INVALID_PARAMS
    assert f"{field} is not valid Unicode" in answer["error"]["message"]


def test_a_line_above_2_31_is_invalid_params(server):
    huge = 2**31
    answer = command(server, "huge-line", commands.EXPLAIN, [{
        "textDocument": {"uri": doc_uri(server)},
        "range": {"start": {"line": 0, "character": 0}, "end": {"line": huge, "character": 0}}}])
    assert answer["error"]["code"] == INVALID_PARAMS
    assert "range.end.line must be at most 2147483647" in answer["error"]["message"]


@pytest.mark.parametrize("token", [{"a": 1}, [1], True])
def test_a_work_done_token_that_is_not_int_or_string_is_invalid_params(server, token):
    answer = command(server, f"token-{type(token).__name__}", commands.LIST_CONVERSATIONS, [{}],
                     workDoneToken=token)
    assert answer["error"]["code"] == INVALID_PARAMS
    assert "workDoneToken must be an integer or a string" in answer["error"]["message"]


@pytest.mark.parametrize(("path", "words"), [
    ("out\x00.jsonl", "NUL character"),
    ("x" * 5000, "5000 characters"),
    ("a/" + "y" * 300 + ".jsonl", "cannot write"),
])
def test_export_paths_no_file_can_have_are_invalid_params(server, path, words):
    answer = command(server, f"export-{words}", commands.EXPORT_CONVERSATIONS, [{"path": path}])
    assert answer["error"]["code"] == INVALID_PARAMS
    assert words in answer["error"]["message"]


def test_empty_arguments_list_conversations(server):
    answer = command(server, "empty-args", commands.LIST_CONVERSATIONS, [])
    assert isinstance(answer["result"]["conversations"], list)


# -- export stays inside the workspace --------------------------------------------------

@pytest.fixture
def outside(server) -> Iterator[Path]:
    """A directory outside the workspace, and a symlink to it inside."""
    target = server.tmp / "outside"
    target.mkdir()
    link = server.workspace / "link"
    link.symlink_to(target)
    yield target
    link.unlink()
    for child in target.iterdir():
        child.unlink()
    target.rmdir()


@pytest.mark.parametrize("relative", ["../outside/dotdot.jsonl", "link/through.jsonl",
                                      "sub/../../outside/mixed.jsonl"])
def test_a_relative_export_path_cannot_leave_the_workspace(server, outside, relative):
    answer = command(server, f"escape-{relative}", commands.EXPORT_CONVERSATIONS,
                     [{"path": relative}])
    assert answer["error"]["code"] == INVALID_PARAMS
    assert "leads outside the workspace" in answer["error"]["message"]
    assert list(outside.iterdir()) == []


def test_a_symlinked_file_in_the_workspace_is_not_followed_outside(server, outside):
    (server.workspace / "export.jsonl").symlink_to(outside / "victim.jsonl")
    try:
        answer = command(server, "file-link", commands.EXPORT_CONVERSATIONS,
                         [{"path": "export.jsonl"}])
        assert answer["error"]["code"] == INVALID_PARAMS
        assert not (outside / "victim.jsonl").exists()
    finally:
        (server.workspace / "export.jsonl").unlink()


def test_relative_inside_and_absolute_anywhere_are_written(server, outside):
    inside = command(server, "export-in", commands.EXPORT_CONVERSATIONS,
                     [{"path": "exports/../conversations.jsonl"}])
    written = Path(inside["result"]["path"])
    assert written == server.workspace.resolve() / "conversations.jsonl" and written.is_file()
    written.unlink()
    absolute = outside / "chosen.jsonl"
    answer = command(server, "export-abs", commands.EXPORT_CONVERSATIONS,
                     [{"path": os.fspath(absolute)}])
    assert Path(answer["result"]["path"]) == absolute and absolute.is_file()
