"""The shared worker process: streaming, cancel, concurrency, bad frames, death and restart."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time

import msgpack
import pytest

from model.runtime.paths import unix_address
from model.runtime.spec import ModelSpec
from model.serving import protocol
from model.serving.client import WorkerClient, WorkerError, ensure_worker

ASK = {"messages": [{"role": "user", "content": "Write a Python function is_even(n)."}],
       "params": {"max_new_tokens": 32}}


def collect(client: WorkerClient, request: dict) -> tuple[str, dict, list[float]]:
    text, times, done = [], [], {}
    for event in client.generate(request):
        if event["type"] == "delta":
            text.append(event["text"])
            times.append(time.monotonic())
        elif event["type"] in ("done", "error"):
            done = event
    return "".join(text), done, times


def test_streams_an_answer(worker_socket):
    with WorkerClient(socket_path=worker_socket) as client:
        text, done, times = collect(client, ASK)
        again, _, _ = collect(client, ASK)
    assert done["type"] == "done" and done["finish_reason"] == "length"
    assert len(times) > 5 and "def is_even" in text
    assert again == text  # greedy: the same answer every time
    assert set(done["usage"]) >= {"prompt_tokens", "tokens", "ttft_s", "tok_per_s"}


def test_structured_request_reports_truncation(worker_socket):
    """A selection far over the budget is cut in its middle and the cut reported. The budget
    is the window less ``max_new_tokens``: a large one leaves the prompt 256 tokens, so the
    cut is the same as at full size but the prefill and the fitting short (a full window of a
    3,000-line selection took 2 minutes of this suite on a loaded machine); the answer is
    cancelled after its first token."""
    selection = "".join(f"value_{i} = {i}\n" for i in range(600))  # ~4,800 tokens
    with WorkerClient(socket_path=worker_socket) as client:
        while not (info := client.info()).get("ready"):
            time.sleep(0.05)
        window = info["context_window"]
        request = {"system": "S", "history": [], "params": {"max_new_tokens": window - 256},
                   "user_parts": [{"kind": "selection", "text": selection}, {"kind": "text", "text": "Explain."}]}
        client._send({**request, "type": "generate", "id": "cut"})
        frames = [client._recv()]
        client._send({"type": "cancel", "id": "cut"})
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(client._recv())
    done = frames[-1]
    assert done["type"] == "done"
    assert any("middle of the selection" in t for t in done["truncated"])
    assert 128 < done["usage"]["prompt_tokens"] <= 256


def test_cancel_frame_stops_generation(worker_socket):
    with WorkerClient(socket_path=worker_socket) as client:
        client.connect()
        client._send({**ASK, "params": {"max_new_tokens": 400}, "type": "generate", "id": 1})
        frames = [client._recv()]
        assert frames[0]["type"] == "delta"
        client._send({"type": "cancel", "id": 1})  # mid-answer: after the first delta
        while frames[-1]["type"] != "done":
            frames.append(client._recv())
        done = frames[-1]
        # Stopped by the cancel (an answer that ran out would say "stop" or "length"), with
        # deltas, then one done. How fast is benchmarks/' business: the deltas already in
        # flight when the cancel arrives depend on the machine's load.
        assert done["finish_reason"] == "cancelled"
        assert done["usage"]["tokens"] < 400
        assert all(f["type"] == "delta" for f in frames[:-1])
        text, done, _ = collect(client, ASK)  # the worker serves the next request normally
        assert done["finish_reason"] == "length" and text


LONG = {"messages": [{"role": "user", "content": "Write a long Python tutorial about lists, "
                                                 "with many examples."}],
        "params": {"max_new_tokens": 400}}


def test_a_second_client_is_served_while_the_first_streams(worker_socket):
    """Concurrent, not queued: B's whole answer arrives while A is still streaming."""
    other = {"messages": [{"role": "user", "content": "What is a Python list?"}], "params": {"max_new_tokens": 32}}
    with WorkerClient(socket_path=worker_socket) as c:
        solo = collect(c, other)[0]
    with WorkerClient(socket_path=worker_socket) as a, WorkerClient(socket_path=worker_socket) as b:
        a.connect()
        a._send({**LONG, "type": "generate", "id": 1})
        assert a._recv()["type"] == "delta"  # A is streaming
        text, done, _ = collect(b, other)
        a._send({"type": "cancel", "id": 1})
        while (frame := a._recv())["type"] != "done":
            assert frame["type"] == "delta"
    # B got its own answer: the one it gets alone (llama.cpp's batched steps are not
    # bit-identical to single ones, so greedy may part at a near-tie later on).
    assert done["finish_reason"] == "length"
    assert len(os.path.commonprefix([text, solo])) >= min(24, len(solo)), (text, solo)
    # A was cancelled, so it was still generating when B finished: B was not queued behind it.
    assert frame["finish_reason"] == "cancelled"


def _raw(path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    with unix_address(path) as address:
        s.connect(address)
    return s


def test_malformed_frames_get_errors_and_the_worker_lives(worker_socket):
    s = _raw(worker_socket)
    s.sendall(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")  # not msgpack
    assert "not valid msgpack" in protocol.recv_frame(s)["message"]
    s.sendall(protocol.pack({"no_type": 1}))
    assert "type" in protocol.recv_frame(s)["message"]
    nested: list = []
    for _ in range(100):
        nested = [nested]
    s.sendall(struct.pack(">I", len(b := msgpack.packb({"type": "info", "x": nested}))) + b)
    assert "deeper" in protocol.recv_frame(s)["message"]
    s.sendall(protocol.pack({"type": "generate", "id": 9, "messages": "nope"}))
    assert "messages" in protocol.recv_frame(s)["message"]
    s.sendall(protocol.pack({"type": "info", "id": 2}))
    assert protocol.recv_frame(s)["ready"] is True  # same connection still served
    s.sendall(struct.pack(">I", protocol.MAX_FRAME + 1))  # cannot resync: error, then closed
    assert "exceeds" in protocol.recv_frame(s)["message"]
    assert protocol.recv_frame(s) is None
    s.close()
    with WorkerClient(socket_path=worker_socket) as client:
        assert client.info()["ready"] is True


def test_socket_is_private(worker_socket):
    assert oct(os.stat(worker_socket).st_mode & 0o777) == oct(0o600)


def test_killed_worker_gives_an_error_and_the_next_request_restarts(tmp_path):
    from tests.model.conftest import kill_workers

    path = tmp_path / "w.sock"
    ensure_worker("default", path)
    client = WorkerClient(socket_path=path)
    try:
        pid = client.info()["pid"]
        events = client.generate({**ASK, "params": {"max_new_tokens": 400}})
        assert next(e for e in events if e["type"] == "delta")
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerError, match="exited unexpectedly"):
            for _ in events:  # an error, not a hang (pytest-timeout guards that)
                pass
        text, done, _ = collect(client, ASK)  # a fresh worker answers
        assert done["type"] == "done" and "def" in text
        assert client.info()["pid"] != pid
    finally:
        client.close()
        kill_workers(tmp_path)


def test_int4_spec_gets_its_own_worker(tmp_path, worker_socket):
    """`default@int4` is a different worker (own socket) running 4-bit weights. (Among the
    suite's slowest by design: a second worker that loads and quantizes the model is what
    it tests.)"""
    from tests.model.conftest import kill_workers

    assert protocol.socket_path_for(ModelSpec.parse("default@int4")) != protocol.socket_path_for(ModelSpec.default())
    path = ensure_worker("default@int4", tmp_path / "worker-int4.sock")
    try:
        with WorkerClient(socket_path=path) as client:
            text, done, _ = collect(client, ASK)
            info = client.info()
        assert info["quantize"] == "int4" and info["runner"] == "lean" and info["model"].endswith("@int4")
        assert info["engine"] == "torch"  # our own int4 runner, not llama.cpp
        assert done["finish_reason"] == "length" and "def is_even" in text
        with WorkerClient(socket_path=worker_socket) as client:  # restarts if it idled out
            while not (full := client.info()).get("ready"):
                time.sleep(0.05)
        assert full["engine"] == "llama.cpp" and full["runner"] == "llama.cpp"  # the GGUF as it is
    finally:
        kill_workers(tmp_path)
