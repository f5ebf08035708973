"""The OpenAI-compatible backend against a real server on loopback.

The real servers are ``transformers serve`` (the embedded model's safetensors folder, no
hub) and llama.cpp's own server (its GGUF file): each test of the real server runs against
both, one server at a time (``openai_server``, tests/conftest.py). Faults
that a healthy server cannot produce (a 401, a server that never answers, a broken event
stream) use FAKE servers defined here, each named ``fake_*``; everything else talks to the
real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request

import pytest

from model.backends.openai_backend import (
    AsyncOpenAIClient,
    OpenAIBackendError,
    OpenAIClient,
    OpenAISettings,
    UnknownModelError,
    build_body,
    make_async_client,
    make_client,
    parse_backend,
)
from tests.servers import free_port

CODE_QUESTION = [{"role": "user", "content": "Write a Python function that reverses a string."}]


@pytest.fixture(scope="module")
def server_url(openai_server):
    return openai_server.url


def closed_port_url() -> str:
    """A real loopback port that nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/v1"


@contextlib.asynccontextmanager
async def fake_server(answer: bytes | None, seen: list | None = None):
    """FAKE HTTP server for fault tests only: reads a request, sends ``answer`` verbatim
    and closes; with ``answer=None`` it accepts and never says anything."""
    handlers = []

    async def handle(reader, writer):
        handlers.append(asyncio.current_task())
        head = await reader.readuntil(b"\r\n\r\n")
        if seen is not None:
            seen.append(head.decode("latin-1"))
        if answer is None:
            await asyncio.sleep(3600)
        writer.write(answer)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        srv.close()
        for task in handlers:
            task.cancel()


def http_answer(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def collect(client, request, request_id=None) -> tuple[list[str], dict]:
    deltas, last = [], {}
    async for event in client.generate(request, request_id=request_id):
        if event["type"] == "delta":
            deltas.append(event["text"])
        else:
            last = event
    return deltas, last


# --- the request as sent: messages, budget, params (no server needed) ---

def test_structured_request_becomes_messages_with_parts_concatenated_in_order():
    body, cut = build_body(
        {"system": "S", "history": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}],
         "user_parts": [{"kind": "text", "text": "Explain:\n"}, {"kind": "selection", "text": "x = 1\n"}],
         "params": {"max_new_tokens": 7, "temperature": 0.5, "top_p": 0.9, "stop": ["###"], "seed": 3}},
        "m", 10_000,
    )
    assert body["messages"] == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"}, {"role": "user", "content": "Explain:\nx = 1\n"},
    ]
    assert cut == []
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["model"], body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) \
        == ("m", 7, 0.5, 0.9, ["###"], 3)
    assert "top_k" not in body and "repetition_penalty" not in body


def test_over_budget_drops_the_oldest_turns_first_and_says_so():
    history = []
    for i in range(6):
        history += [{"role": "user", "content": f"question {i} " + "x" * 200},
                    {"role": "assistant", "content": f"answer {i} " + "y" * 200}]
    request = {"messages": [{"role": "system", "content": "S"}, *history,
                            {"role": "user", "content": "last question"}]}
    body, cut = build_body(request, None, 1000)
    contents = [m["content"] for m in body["messages"]]
    assert contents[0] == "S" and contents[-1] == "last question"
    assert sum(len(c) for c in contents) <= 1000
    assert not any(c.startswith("question 0") for c in contents)  # oldest went first
    assert any(c.startswith("answer 5") for c in contents)  # newest stayed
    kept = len(body["messages"]) - 2
    assert cut == [f"{12 - kept} earlier messages of the conversation"]
    assert kept % 2 == 0  # a question and its answer leave together


def test_bad_requests_and_settings_are_one_sentence_errors():
    with pytest.raises(ValueError, match="max_new_tokens"):
        build_body({"messages": CODE_QUESTION, "params": {"max_new_tokens": 0}}, None, 1000)
    with pytest.raises(ValueError, match="end with a user message"):
        build_body({"messages": [{"role": "assistant", "content": "hi"}]}, None, 1000)
    with pytest.raises(ValueError, match="http:// or https://"):
        make_async_client({"backend": "openai", "url": "localhost:8000"})
    with pytest.raises(ValueError, match="needs a url"):
        parse_backend({"backend": "openai"})
    with pytest.raises(ValueError, match="Unknown model backend 'vllm'"):
        parse_backend({"backend": "vllm", "url": "http://x"})
    with pytest.raises(ValueError, match="read_timeout must be a positive number"):
        parse_backend({"backend": "openai", "url": "http://x/v1", "read_timeout": -1})
    assert type(make_async_client("default")).__name__ == "AsyncWorkerClient"
    assert type(make_client({"name": "default"})).__name__ == "WorkerClient"


# --- faults: a real closed port, and FAKE servers for what a healthy server never does ---

async def test_unreachable_server_is_a_clear_error():
    client = AsyncOpenAIClient(OpenAISettings(url=closed_port_url(), model="m"))
    with pytest.raises(OpenAIBackendError, match=r"^The server at http://127\.0\.0\.1:\d+/v1 is unreachable: .+\.$"):
        await client.connect()
    with pytest.raises(OpenAIBackendError, match="is unreachable"):
        await collect(client, {"messages": CODE_QUESTION})


async def test_401_names_the_server_message_and_the_key_variable(monkeypatch):
    monkeypatch.setenv("MY_TEAM_KEY", "sekret-123")
    body = json.dumps({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error"}})
    seen: list[str] = []
    async with fake_server(http_answer("401 Unauthorized", body.encode()), seen) as url:
        client = AsyncOpenAIClient(OpenAISettings(url=url, model="m", api_key_env="MY_TEAM_KEY"))
        with pytest.raises(OpenAIBackendError) as err:
            await client.connect()
    assert str(err.value) == (f"The server at {url} answered HTTP 401 Unauthorized: Incorrect API key "
                              "provided. Check the API key in the environment variable MY_TEAM_KEY.")
    assert "authorization: bearer sekret-123" in seen[0].lower()
    assert seen[0].startswith("GET /v1/models HTTP/1.1")


async def test_a_server_that_never_answers_times_out():
    async with fake_server(None) as url:
        client = AsyncOpenAIClient(OpenAISettings(url=url, model="m", connect_timeout=0.5, read_timeout=0.5))
        client._connected = True  # skip the /models probe: the stream's timeout is under test
        started = time.monotonic()
        with pytest.raises(OpenAIBackendError, match=r"sent nothing for 0\.5 s; giving up\.$"):
            await collect(client, {"messages": CODE_QUESTION})
        # The 0.5 s setting was used, not the 120 s default: a bound far below that and far
        # above 0.5 s (measured 8 s on a loaded machine), so that the load does not matter.
        assert time.monotonic() - started < 60


async def test_malformed_event_stream_is_a_clear_error():
    stream = b"data: {\"choices\": [{\"delta\": {\"content\": \"ok\"}}]}\n\ndata: <html>oops\n\n"
    async with fake_server(http_answer("200 OK", stream, "text/event-stream")) as url:
        client = AsyncOpenAIClient(OpenAISettings(url=url, model="m"))
        client._connected = True
        with pytest.raises(OpenAIBackendError, match="sent a malformed event stream: '<html>oops' is not a JSON object"):
            await collect(client, {"messages": CODE_QUESTION})


async def test_a_stream_cut_short_is_an_error_not_a_short_answer():
    stream = b"data: {\"choices\": [{\"delta\": {\"content\": \"def\"}}]}\n\n"
    async with fake_server(http_answer("200 OK", stream, "text/event-stream")) as url:
        client = AsyncOpenAIClient(OpenAISettings(url=url, model="m"))
        client._connected = True
        with pytest.raises(OpenAIBackendError, match="closed the stream before the answer was complete"):
            await collect(client, {"messages": CODE_QUESTION})


# --- the real server ---

async def test_coding_question_streams_code_and_usage(server_url):
    client = make_async_client({"backend": "openai", "url": server_url})
    info = await client.info()
    assert info["ready"] and info["model"] == info["served"][0]  # the one model it serves
    deltas, done = await collect(client, {"messages": CODE_QUESTION, "params": {"max_new_tokens": 24}})
    reply = "".join(deltas)
    assert "def " in reply and "python" in reply.lower(), reply
    assert done["type"] == "done" and done["finish_reason"] in ("stop", "length")
    usage = done["usage"]
    assert usage["tokens"] == 24 or done["finish_reason"] == "stop"
    assert usage["prompt_tokens"] > 10 and 0 < usage["ttft_s"] <= usage["total_s"]
    assert len(deltas) >= 5  # streamed, not one blob


async def test_streamed_deltas_equal_the_servers_non_streamed_answer(server_url):
    client = AsyncOpenAIClient(OpenAISettings(url=server_url))
    request = {"messages": [{"role": "user", "content": "Name a colour."}], "params": {"max_new_tokens": 6}}
    deltas, done = await collect(client, request)
    body, _ = build_body(request, client.model, 10_000)
    body.update(stream=False)
    del body["stream_options"]
    req = urllib.request.Request(server_url + "/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    answer = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(req, timeout=120)))
    assert "".join(deltas) == answer["choices"][0]["message"]["content"]
    assert done["usage"]["tokens"] == answer["usage"]["completion_tokens"]


async def test_cancel_closes_the_stream_promptly(server_url):
    client = AsyncOpenAIClient(OpenAISettings(url=server_url))
    events, cancelled = [], False
    async for event in client.generate({"messages": CODE_QUESTION, "params": {"max_new_tokens": 400}}, "r1"):
        events.append(event)
        if event["type"] == "delta" and not cancelled:
            cancelled = True
            await client.cancel("r1")
    # Promptly = by the cancel, long before the answer's end (speed is benchmarks/' business).
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "cancelled"
    assert sum(e["type"] == "delta" for e in events) < 400
    assert client._streams == {}


async def test_a_model_the_server_does_not_list_is_an_error_naming_the_listed_ones(server_url):
    client = AsyncOpenAIClient(OpenAISettings(url=server_url, model="no-such-model"))
    with pytest.raises(UnknownModelError) as err:
        await collect(client, {"messages": CODE_QUESTION})
    served = AsyncOpenAIClient(OpenAISettings(url=server_url))
    await served.connect()
    assert len(served.served) == 1
    assert str(err.value) == (f"The server at {server_url} does not serve the model 'no-such-model'; "
                              f"it lists: {served.served[0]}.")
    assert not client.connected


async def test_a_wrong_path_comes_back_as_an_error_event_with_the_servers_answer(server_url):
    wrong = server_url + "/no-such-path"
    client = AsyncOpenAIClient(OpenAISettings(url=wrong, model="m"))
    _, event = await collect(client, {"messages": CODE_QUESTION})
    assert event["type"] == "error"
    assert event["message"].startswith(f"The server at {wrong} answered HTTP 404 Not Found: "), event
    assert event["message"].endswith(".")


def test_blocking_client_streams_and_closes_the_stream_on_break(server_url):
    with OpenAIClient(OpenAISettings(url=server_url)) as client:
        events = list(client.generate({"messages": CODE_QUESTION, "params": {"max_new_tokens": 3}}))
        assert [e["type"] for e in events] == ["delta"] * 3 + ["done"]
        stream = client.generate({"messages": CODE_QUESTION, "params": {"max_new_tokens": 400}})
        assert next(stream)["type"] == "delta"
        stream.close()
        assert client._async._streams == {}
