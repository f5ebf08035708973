"""A seeded fuzz run against the real ``starchat lsp`` over raw stdio.

Over 500 messages in five classes (framing, ids, lifecycle, arguments, settings), each
with what it must get back: an answer to its id, one answer with ``"id": null``, or
nothing. Then: no internal error (-32603), every frame strict JSON, every request answered
exactly once, nothing answered that was not a request, no traceback text, no model
worker started, and a clean ``shutdown``/``exit`` (code 0). No model is ever reached:
generating commands always name a conversation that does not exist, and the settings
always keep a worker socket that does not exist with autostart off.

``STARCHAT_FUZZ_SEED`` picks another seed (the failure message names the one used).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from lsp_server import commands

from .rawlsp import HUGE, MINUS_HUGE, RawServer, encode, frame

SEED = int(os.environ.get("STARCHAT_FUZZ_SEED", "20261130"))
MESSAGES = 560
INTERNAL_ERROR = -32603
#: Values that break naive code: lone surrogates, 2^31, 2^64, NUL, long text, wrong types.
HOSTILE = [
    "\ud800", "a\udfffb", "", " ", "x" * 5000, "a\x00b", "../../etc/passwd", "\u202e",
    2**31, 2**31 - 1, 2**64, -1, -(2**63), 0, HUGE, MINUS_HUGE, 1.5, 1e-300,
    True, False, None, [], {}, [[[[[]]]]], {"a": {"b": {"c": []}}}, [1, "x", None],
]
GENERATING = [commands.EXPLAIN, commands.FIX, commands.CHAT, commands.WRITE_TESTS,
              commands.ADD_DOCSTRING]
BAD_SETTINGS_WARNED = [  # each refused by model.prompt.params with a warning naming the field
    ("max_new_tokens", -3), ("max_new_tokens", "many"), ("max_new_tokens", 0),
    ("temperature", -1), ("temperature", "hot"), ("top_p", 0), ("top_p", 1.5),
    ("top_k", -2), ("seed", "x"), ("max_new_tokens", True),
    ("temperature", 50), ("temperature", HUGE), ("max_new_tokens", 2**64),
    ("max_new_tokens", 200000), ("repetition_penalty", 0),
]


@dataclass
class Case:
    """One frame and what it must get back: ``answer`` (its id), ``null`` or ``nothing``."""

    klass: str
    body: bytes
    expect: str
    msg_id: Any = None


class Fuzzer:
    """Builds the cases from one seeded random generator."""

    def __init__(self, rng: random.Random, server: RawServer) -> None:
        self.rng = rng
        self.server = server
        self.next_id = 0
        self.forbidden_ids: list[Any] = []  # ids that must never be answered

    def new_id(self) -> Any:
        self.next_id += 1
        kind = self.rng.randrange(4)
        if kind == 0:
            return self.next_id
        if kind == 1:
            return f"fuzz-{self.next_id}"
        if kind == 2:
            return -(10**30) - self.next_id  # JSON has no integer limit; LSP clients echo it
        return f"\u00fc\ud800-{self.next_id}"  # a lone surrogate in a string id is still a string

    def request(self, method: str, params: Any, klass: str) -> Case:
        msg_id = self.new_id()
        message: dict = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        return Case(klass, encode(message), "answer", msg_id)

    def notification(self, method: str, params: Any, klass: str) -> Case:
        return Case(klass, encode({"jsonrpc": "2.0", "method": method, "params": params}),
                    "nothing")

    def hostile(self) -> Any:
        return self.rng.choice(HOSTILE)

    # -- classes -------------------------------------------------------------------------
    def framing(self) -> Case:
        r = self.rng
        valid = self.request("starchat/unknown", {}, "framing")
        choice = r.randrange(9)
        if choice == 0:  # not UTF-8
            cut = r.randrange(1, len(valid.body))
            return Case("framing", valid.body[:cut] + bytes([r.choice([0xFF, 0xC0, 0x80])])
                        + valid.body[cut:], "null")
        if choice == 1:  # truncated JSON
            return Case("framing", valid.body[: r.randrange(1, len(valid.body) - 1)], "null")
        if choice == 2:  # NaN / Infinity literals
            literal = r.choice([b"NaN", b"Infinity", b"-Infinity"])
            return Case("framing", b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": [%s]}'
                        % literal, "null")
        if choice == 3:  # not an object
            return Case("framing", r.choice([b"1", b'"x"', b"null", b"true", b"{}", b"[]"]),
                        "null")
        if choice == 4:  # a batch: one refusal, the inner requests never answered
            inner = [self.request("shutdown", None, "framing") for _ in range(r.randrange(1, 4))]
            self.forbidden_ids += [c.msg_id for c in inner]
            return Case("framing", b"[" + b", ".join(c.body for c in inner) + b"]", "null")
        if choice == 5:  # jsonrpc version wrong or missing, with a usable id
            message = json.loads(valid.body)
            version = r.choice(["1.0", 2.0, None, "missing"])
            if version == "missing":
                del message["jsonrpc"]
            else:
                message["jsonrpc"] = version
            return Case("framing", encode(message), "answer", valid.msg_id)
        if choice == 6:  # deep nesting: refused (or fine) but answered
            depth = r.choice([50, 400, 800, 1200, 3000, 5000, 9000])
            body = (b'{"jsonrpc": "2.0", "id": %s, "method": "workspace/executeCommand", '
                    b'"params": {"command": "starchat.listConversations", "arguments": '
                    b'[{"x": %s}]}}' % (json.dumps(valid.msg_id).encode(),
                                        b"[" * depth + b"]" * depth))
            return Case("framing", body, "answer", valid.msg_id)
        if choice == 7:  # method or params of the wrong type
            message = json.loads(valid.body)
            if r.random() < 0.5:
                message["method"] = r.choice([7, None, [], ""])
            else:
                message["params"] = r.choice([3, "x", True])
            return Case("framing", encode(message), "answer", valid.msg_id)
        return valid  # an unknown method: MethodNotFound

    def ids(self) -> Case:
        r = self.rng
        choice = r.randrange(4)
        if choice == 0:  # ids that are not integers or strings
            raw_id = r.choice([b"1e400", b"-1e400", b"1.5", b'{"a": 1}', b"[1, 2]", b"true",
                               b"null", b"1e3"])
            return Case("ids", b'{"jsonrpc": "2.0", "id": %s, "method": "workspace/'
                        b'executeCommand", "params": {"command": "starchat.listConversations"}}'
                        % raw_id, "null")
        if choice == 1:  # a request inside a notification's params
            nested = json.loads(self.request("textDocument/codeAction", {}, "ids").body)
            self.forbidden_ids.append(nested["id"])
            return self.notification(
                r.choice(["workspace/didChangeConfiguration", "$/starchat/x", "initialized"]),
                {"settings": {"nested": nested}, "list": [nested]}, "ids")
        if choice == 2:  # a response to a request we never sent
            forged = self.new_id()
            self.forbidden_ids.append(forged)
            return Case("ids", encode({"jsonrpc": "2.0", "id": forged,
                                       "result": self.hostile()}), "nothing")
        return self.request("workspace/executeCommand",
                            {"command": commands.LIST_CONVERSATIONS, "arguments": []}, "ids")

    def lifecycle(self) -> Case:
        r = self.rng
        choice = r.randrange(3)
        if choice == 0:
            return self.request("initialize", {"processId": None, "rootUri": None,
                                               "capabilities": {}}, "lifecycle")
        if choice == 1:
            return self.notification("$/cancelRequest", {"id": self.hostile()}, "lifecycle")
        return self.notification("window/workDoneProgress/cancel",
                                 {"token": self.hostile()}, "lifecycle")

    def arguments(self) -> Case:
        r = self.rng
        choice = r.randrange(6)
        uri = self.server.workspace.joinpath("doc.py").as_uri()
        if choice == 0:  # documents with hostile content and versions
            method = r.choice(["textDocument/didOpen", "textDocument/didChange",
                               "textDocument/didClose"])
            return self.notification(method, {
                "textDocument": {"uri": r.choice([uri, self.hostile()]), "languageId": "python",
                                 "version": r.choice([1, 2**31, -5, self.hostile()]),
                                 "text": r.choice(["def f():\n    return 1\n", "\ud800\n",
                                                   self.hostile()])},
                "contentChanges": [{"range": self._range(), "text": r.choice(["x", "\udfff"])}],
            }, "arguments")
        if choice == 1:  # code actions on hostile ranges
            return self.request("textDocument/codeAction", {
                "textDocument": {"uri": r.choice([uri, "file:///nowhere.py", self.hostile()])},
                "range": self._range(), "context": {"diagnostics": []}}, "arguments")
        name = r.choice([*commands.ALL_COMMANDS, "starchat.nope", self.hostile()])
        if r.random() < 0.7:  # a well-formed argument with one or two fields made hostile
            argument = self._plausible(name, uri)
            for key in r.sample(sorted(argument) or ["title"], min(len(argument), 2) or 1):
                argument[key] = self._value_for(key, uri)
        else:
            argument = {key: self._value_for(key, uri) for key in r.sample(
                ["title", "message", "conversationId", "path", "textDocument", "range",
                 "diagnostics"], r.randrange(0, 4))}
        if name in GENERATING:  # never reach the model: the conversation does not exist
            argument["conversationId"] = f"no-such-conversation-{self.next_id}"
        arguments = r.choice([[argument]] * 6 + [[], None, [argument, argument], "x", [1],
                                                 [self.hostile()]])
        params: dict = {"command": name, "arguments": arguments}
        if r.random() < 0.3:
            params["workDoneToken"] = self.hostile()
        return self.request("workspace/executeCommand", params, "arguments")

    @staticmethod
    def _plausible(name: Any, uri: str) -> dict:
        """An argument the command would accept (generating ones stop at the conversation)."""
        if not isinstance(name, str):
            return {}
        selection = {"textDocument": {"uri": uri}, "range": {
            "start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}}}
        return {
            commands.NEW_CONVERSATION: {"title": "a title"},
            commands.DELETE_CONVERSATION: {"conversationId": "no-such-conversation"},
            commands.EXPORT_CONVERSATIONS: {"path": "exports/out.jsonl"},
            commands.CHAT: {"message": "hello", **selection},
        }.get(name, selection if name in GENERATING else {})

    def _value_for(self, key: str, uri: str) -> Any:
        r = self.rng
        if key == "path":
            return r.choice(["../escape.jsonl", "link/../../escape.jsonl", "out.jsonl",
                             "sub/out.jsonl", "a\x00b", "y" * 5000, "z" * 300 + "/x",
                             "\ud800.jsonl", self.hostile()])
        if key == "textDocument":
            return r.choice([{"uri": uri}, {"uri": self.hostile()}, self.hostile()])
        if key == "range":
            return self._range()
        return self.hostile()

    def _position(self) -> Any:
        r = self.rng
        if r.random() < 0.15:
            return self.hostile()
        return {"line": r.choice([0, 1, 3, 2**31 - 1, 2**31, 2**64, -1, self.hostile()]),
                "character": r.choice([0, 5, 2**31, -1, self.hostile()])}

    def _range(self) -> Any:
        if self.rng.random() < 0.1:
            return self.hostile()
        return {"start": self._position(), "end": self._position()}

    def settings(self) -> Case:
        r = self.rng
        name, value = r.choice(BAD_SETTINGS_WARNED)
        section = r.choice(["generation", "context"])
        if section == "context":
            name = r.choice(["surrounding_lines", "edit_surrounding_lines", "max_diagnostics"])
        starchat = {**self.server.offline_settings(), section: {name: value}}
        return self.notification("workspace/didChangeConfiguration",
                                 {"settings": {"starchat": starchat}}, "settings")

    def pre_initialize(self) -> Case:
        r = self.rng
        if r.random() < 0.5:
            return self.request(r.choice(["shutdown", "textDocument/codeAction",
                                          "workspace/executeCommand", "starchat/x"]),
                                {"command": commands.LIST_CONVERSATIONS}, "lifecycle")
        return self.notification(r.choice(["textDocument/didOpen", "initialized",
                                           "workspace/didChangeConfiguration"]),
                                 {"x": self.hostile()}, "lifecycle")

    def post_shutdown(self) -> Case:
        if self.rng.random() < 0.6:
            return self.request(self.rng.choice(["shutdown", "initialize",
                                                 "workspace/executeCommand"]), {}, "lifecycle")
        return self.notification("textDocument/didOpen", {}, "lifecycle")


def _responses(messages: list[Any]) -> list[dict]:
    return [m for m in messages if isinstance(m, dict) and "method" not in m]


def _same(a: Any, b: Any) -> bool:
    return a == b and type(a) is type(b)


def test_fuzzed_server_answers_every_request_once_and_never_fails_internally():
    rng = random.Random(SEED)
    with RawServer() as server:
        fuzz = Fuzzer(rng, server)
        cases = [fuzz.pre_initialize() for _ in range(20)]
        for case in cases:
            server.write(frame(case.body))
        server.initialize(msg_id="fuzz-init")
        server.notify("textDocument/didOpen", {"textDocument": {
            "uri": server.workspace.joinpath("doc.py").as_uri(), "languageId": "python",
            "version": 1, "text": "def f(x):\n    return x + 1\n\nprint(f(2))\n"}})
        link = server.workspace / "link"
        link.symlink_to(server.tmp)  # a symlink out of the workspace for export paths
        makers = [fuzz.framing, fuzz.ids, fuzz.lifecycle, fuzz.arguments, fuzz.arguments,
                  fuzz.settings]
        for _ in range(MESSAGES):
            case = rng.choice(makers)()
            if case.klass == "framing" and rng.random() < 0.1:
                server.write(b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n")
            server.write(frame(case.body))
            cases.append(case)
        # Everything sent so far is answered before the end of the run.
        assert "result" in server.request("fuzz-last", "workspace/executeCommand",
                                          {"command": commands.LIST_CONVERSATIONS}, timeout=120)
        assert server.request("fuzz-shutdown", "shutdown", timeout=60)["result"] is None
        tail = [fuzz.post_shutdown() for _ in range(20)]
        for case in tail:
            server.write(frame(case.body))
        cases += tail
        expected_ids = [c.msg_id for c in cases if c.expect == "answer"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answered = {json.dumps(m.get("id")) for m in _responses(server.messages())}
            if all(json.dumps(i) in answered for i in expected_ids):
                break
            time.sleep(0.2)
        server.notify("exit")
        exit_code = server.exit_code(30)

        where = f"(seed {SEED}; stderr tail: {server.stderr_tail(1500)})"
        messages = server.messages()  # strict: raises on NaN/Infinity or bad UTF-8
        responses = _responses(messages)
        errors = [r for r in responses if "error" in r]
        assert not [e for e in errors if e["error"]["code"] == INTERNAL_ERROR], where
        assert not server.tracebacks_sent(), where
        assert not server.bad_frames, where
        assert all(r.get("jsonrpc") == "2.0" for r in messages if isinstance(r, dict)), where
        assert all(("result" in r) != ("error" in r) for r in responses), where
        for error in errors:
            assert isinstance(error["error"]["code"], int)
            assert isinstance(error["error"]["message"], str) and error["error"]["message"]
            assert "data" not in error["error"], error

        counts = Counter(json.dumps(r.get("id")) for r in responses)
        missing = [i for i in expected_ids if counts[json.dumps(i)] == 0]
        twice = [i for i in expected_ids if counts[json.dumps(i)] > 1]
        assert not missing, f"{len(missing)} requests never answered, e.g. {missing[:5]} {where}"
        assert not twice, f"answered more than once: {twice[:5]} {where}"
        for forbidden in fuzz.forbidden_ids:
            assert not [r for r in responses if _same(r.get("id"), forbidden)], forbidden
        nulls = sum(1 for c in cases if c.expect == "null")
        assert counts["null"] == nulls, where
        known = {json.dumps(i) for i in expected_ids} | {"null", '"fuzz-init"',
                                                        '"fuzz-last"', '"fuzz-shutdown"'}
        assert set(counts) <= known, set(counts) - known

        by_class = Counter(c.klass for c in cases)
        assert len(cases) >= 500 and all(by_class[k] >= 40 for k in
                                         ("framing", "ids", "lifecycle", "arguments",
                                          "settings")), by_class
        assert exit_code == 0, where
        # No model was ever reached: no worker socket in the server's runtime directory.
        run_dir = server.tmp / "run"
        assert not run_dir.exists() or not list(run_dir.glob("*.sock")), list(run_dir.iterdir())


def test_bad_settings_warn_or_are_taken_but_never_fail():
    """Settings fuzz in isolation: no error response, the server lives, warnings where due."""
    with RawServer() as server:
        server.initialize()
        server.wait_for(lambda m: m.get("method") == "window/showMessage")  # no worker: said once
        for name, value in BAD_SETTINGS_WARNED:
            start = len(server.frames)
            server.notify("workspace/didChangeConfiguration", {"settings": {"starchat": {
                **server.offline_settings(), "generation": {name: value}}}})
            warning = server.wait_for(
                lambda m, n=name: m.get("method") == "window/showMessage"
                and m["params"]["type"] == 2 and n in m["params"]["message"],
                timeout=20, start=start)
            assert warning["params"]["message"]
            answer = server.request(f"alive-{name}-{value!r}", "workspace/executeCommand",
                                    {"command": commands.LIST_CONVERSATIONS})
            assert "result" in answer
            assert not [m for m in server.messages()[start:]
                        if isinstance(m, dict) and "error" in m]
        assert not server.tracebacks_sent()
