"""The JSON-RPC checks in isolation: parsing, the envelope, the id of a too-deep message."""

from __future__ import annotations

import pytest

from lsp_server.jsonrpc import (
    INVALID_REQUEST,
    PARSE_ERROR,
    BadMessage,
    check_envelope,
    parse_body,
    top_level_id,
)


def _refusal(call, *args) -> BadMessage:
    with pytest.raises(BadMessage) as caught:
        call(*args)
    return caught.value


@pytest.mark.parametrize(("body", "words"), [
    (b'{"a": "\xff"}', "not UTF-8"),
    (b'{"a": NaN}', "NaN is not JSON"),
    (b'{"a": -Infinity}', "-Infinity is not JSON"),
    (b'{"a": ', "not valid JSON"),
    (b'{"a": 1' + b"1" * 5000 + b"}", "not valid JSON"),  # past int()'s digit limit
])
def test_bodies_that_are_not_json_are_parse_errors_with_id_null(body, words):
    bad = _refusal(parse_body, body)
    assert bad.code == PARSE_ERROR and words in bad.message and bad.msg_id is None
    assert bad.response()["id"] is None


def test_too_deep_is_an_invalid_request_that_keeps_its_id():
    deep = b"[" * 5000 + b"]" * 5000
    bad = _refusal(parse_body, b'{"params": {"x": "}{", "y": %s}, "id": "d-1"}' % deep)
    assert bad.code == INVALID_REQUEST and bad.msg_id == "d-1"


@pytest.mark.parametrize(("text", "expected"), [
    ('{"jsonrpc": "2.0", "id": 7, "params": [[[]]]}', 7),
    ('{"params": {"id": 3}, "id": "top"}', "top"),  # a nested "id" is not the message's
    ('{"params": {"x": "\\"id\\": 9"}, "method": "m"}', None),  # nor one inside a string
    ('{"id": 1e400}', None),
    ('{"id": {"a": 1}}', None),
    ('[{"id": 5}]', None),
    ('{"id": "un\\"closed', None),
])
def test_top_level_id_finds_only_the_messages_own_usable_id(text, expected):
    assert top_level_id(text) == expected


def test_depth_900_parses():
    value = parse_body(b'{"x": %s}' % (b"[" * 900 + b"]" * 900))["x"]
    depth = 0
    while value:
        value, depth = value[0], depth + 1
    assert depth == 899


@pytest.mark.parametrize(("message", "msg_id", "words"), [
    ([], None, "Batches"),
    ([{"jsonrpc": "2.0", "id": 1, "method": "m"}], None, "Batches"),
    (5, None, "JSON object"),
    ({}, None, '"jsonrpc": "2.0"'),
    ({"jsonrpc": "1.0", "id": 4, "method": "m"}, 4, '"jsonrpc": "2.0"'),
    ({"jsonrpc": "2.0", "id": 1.0, "method": "m"}, None, "integer or a string"),
    ({"jsonrpc": "2.0", "id": False, "method": "m"}, None, "integer or a string"),
    ({"jsonrpc": "2.0", "id": None, "method": "m"}, None, "integer or a string"),
    ({"jsonrpc": "2.0", "id": 2, "method": ""}, 2, "method"),
    ({"jsonrpc": "2.0", "id": 2, "method": "m", "params": "x"}, 2, "params"),
    ({"jsonrpc": "2.0", "id": 3}, 3, "needs a method"),
    ({"jsonrpc": "2.0"}, None, "needs a method"),
])
def test_what_is_not_one_message_is_an_invalid_request(message, msg_id, words):
    bad = _refusal(check_envelope, message)
    assert bad.code == INVALID_REQUEST and bad.msg_id == msg_id and words in bad.message


@pytest.mark.parametrize("message", [
    {"jsonrpc": "2.0", "id": 1, "method": "m"},
    {"jsonrpc": "2.0", "id": "x", "method": "m", "params": []},
    {"jsonrpc": "2.0", "id": -(10**30), "method": "m", "params": None},
    {"jsonrpc": "2.0", "method": "n", "params": {}},
    {"jsonrpc": "2.0", "id": 1, "result": None},
    {"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "m"}},
])
def test_valid_messages_pass(message):
    check_envelope(message)
