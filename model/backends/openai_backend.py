"""The model behind an OpenAI-compatible server (vLLM, TGI, llama.cpp server, Ollama).

When a team's model runs on a shared GPU server, the language server talks to it instead
of the local worker. :class:`AsyncOpenAIClient` and :class:`OpenAIClient` have exactly the
interface of ``model.serving.client.AsyncWorkerClient`` / ``WorkerClient`` (same requests, same
``progress``/``delta``/``done``/``error`` events), so callers need not know which backend
answers. Messages go as messages (``POST {url}/chat/completions`` with ``stream: true``):
the server applies its own model's chat template. The prompt budget is approximate,
counted in characters (``max_prompt_chars``) with the same cut order as the worker's
token budget (``model.prompt.budget.fit``); every cut is reported in ``truncated``.

Failures the server answered (HTTP 4xx/5xx, a bad request) come back as ``error`` events,
like a worker refusing a request; failures of the connection itself (unreachable, timeout,
a broken stream) raise :class:`OpenAIBackendError`, a ``WorkerError``, like a dead worker;
a model name the server does not list raises :class:`UnknownModelError` (a settings
mistake: the CLI exits 2 on it). Tested against ``transformers serve`` and llama.cpp's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any, cast

from ..runtime.spec import ModelSpec
from ..serving.client import AsyncWorkerClient, WorkerClient, WorkerError
from .openai_http import Endpoint, HTTPFailure, error_message, request, sse_events

log = logging.getLogger(__name__)

DEFAULT_API_KEY_ENV = "STARCHAT_OPENAI_API_KEY"
DEFAULT_MAX_PROMPT_CHARS = 24_000  # ~6k tokens of code: fits every server's context window


class OpenAIBackendError(WorkerError):
    """The OpenAI-compatible server is unreachable, timed out or broke the stream."""


class UnknownModelError(OpenAIBackendError):
    """The configured model is not among those the server lists (a settings mistake)."""


@dataclass(frozen=True)
class OpenAISettings:
    """Where the server is and how long to wait for it."""

    url: str
    model: str | None = None  # None: the one model the server lists
    api_key_env: str = DEFAULT_API_KEY_ENV
    connect_timeout: float = 10.0
    read_timeout: float = 120.0  # between two chunks; a busy GPU server may queue a request
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS


class _CharCount:
    """A stand-in chat format for ``budget.fit`` that counts characters, not tokens."""

    kind = "openai"

    def encode(self, messages: list[dict], add_generation_prompt: bool = True) -> range:
        return range(sum(len(m["content"]) + 16 for m in messages))  # +16: role markup


def build_body(request: dict, model: str | None, max_prompt_chars: int) -> tuple[dict, list[str]]:
    """The ``/chat/completions`` body for a worker-style request, and what was cut.

    Raises ValueError with one sentence on a malformed request or bad params.
    """
    from ..prompt.budget import fit_request
    from ..prompt.params import GenerationParams

    if not isinstance(request, dict):
        raise ValueError("A request must be a map.")
    params = GenerationParams.from_dict(request.get("params"))
    fitted = fit_request(cast(Any, _CharCount()), max_prompt_chars, request)
    body: dict[str, Any] = {
        "messages": fitted.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
    }
    if model:
        body["model"] = model
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    # Not in OpenAI's API, but vLLM, llama.cpp server and Ollama read them; sent only when set.
    if params.top_k:
        body["top_k"] = params.top_k
    if params.repetition_penalty != 1.0:
        body["repetition_penalty"] = params.repetition_penalty
    return body, fitted.truncated


class AsyncOpenAIClient:
    """asyncio client with the interface of ``AsyncWorkerClient``; one HTTP stream a request."""

    def __init__(self, settings: OpenAISettings):
        self.settings = settings
        self.endpoint = Endpoint.parse(settings.url)
        self.model = settings.model
        self.served: list[str] = []
        self._connected = False
        self._streams: dict[Any, Any] = {}

    @property
    def connected(self) -> bool:
        return self._connected

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.settings.api_key_env or DEFAULT_API_KEY_ENV, "").strip()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _http_error(self, status: int, reason: str, body: bytes) -> str:
        message = f"The server at {self.endpoint.url} answered HTTP {status} {reason}".rstrip()
        message += f": {error_message(body).rstrip('.')}."
        if status in (401, 403):
            message += f" Check the API key in the environment variable {self.settings.api_key_env}."
        return message

    async def connect(self) -> None:
        """Check that the server answers (``GET {url}/models``) and pick the model if unset."""
        if self._connected:
            return
        s = self.settings
        try:
            response = await request(self.endpoint, "GET", "/models", headers=self._headers(),
                                     connect_timeout=s.connect_timeout, read_timeout=s.connect_timeout)
            try:  # a model list is quick to answer, so the short timeout applies to it too
                body = await response.read_body(s.connect_timeout)
            finally:
                response.close()
        except HTTPFailure as exc:
            raise OpenAIBackendError(str(exc)) from None
        if response.status in (401, 403) or response.status >= 500:
            raise OpenAIBackendError(self._http_error(response.status, response.reason, body))
        if response.status == 200:
            try:
                self.served = [str(m["id"]) for m in json.loads(body)["data"]]
            except (ValueError, KeyError, TypeError):
                log.warning("%s/models answered something other than a model list", self.endpoint.url)
        # Some servers have no /models; then the chat request itself tells whether the model exists.
        if self.model is None:
            if len(self.served) != 1:
                listed = ", ".join(self.served[:10]) or "none listed"
                raise OpenAIBackendError(
                    f"Set the backend's model: the server at {self.endpoint.url} serves {listed}."
                )
            self.model = self.served[0]
        elif self.served and self.model not in self.served:
            # Some servers (llama.cpp's) answer any model name with their own model: the
            # user would get answers from another model than the one they asked for.
            listed = ", ".join(self.served[:10]) + (", …" if len(self.served) > 10 else "")
            raise UnknownModelError(
                f"The server at {self.endpoint.url} does not serve the model {self.model!r}; "
                f"it lists: {listed}."
            )
        self._connected = True

    async def info(self) -> dict:
        """What the worker's ``info`` says: ready at once, since the server has loaded its model."""
        await self.connect()
        return {"type": "info", "ready": True, "backend": "openai", "url": self.endpoint.url,
                "spec": self.model, "model": self.model, "served": self.served, "load_error": None}

    async def generate(self, request_: dict, request_id: Any = None) -> AsyncGenerator[dict, None]:
        """Yield ``delta`` events then one ``done`` (or ``error``); leaving early closes the stream."""
        await self.connect()
        req_id = request_id if request_id is not None else uuid.uuid4().hex
        try:
            body, truncated = build_body(request_, self.model, self.settings.max_prompt_chars)
        except ValueError as exc:
            yield {"type": "error", "id": req_id, "message": str(exc)}
            return
        s = self.settings
        started = time.perf_counter()
        try:
            response = await request(self.endpoint, "POST", "/chat/completions", body=body,
                                     headers=self._headers(), connect_timeout=s.connect_timeout,
                                     read_timeout=s.read_timeout)
        except HTTPFailure as exc:
            raise OpenAIBackendError(str(exc)) from None
        self._streams[req_id] = response
        try:
            if response.status != 200:
                try:
                    error_body = await response.read_body(s.read_timeout)
                except HTTPFailure:
                    error_body = b""
                yield {"type": "error", "id": req_id,
                       "message": self._http_error(response.status, response.reason, error_body)}
                return
            async with contextlib.aclosing(self._stream_events(response, req_id, started, truncated)) as events:
                async for event in events:
                    yield event
        finally:
            self._streams.pop(req_id, None)
            response.close()

    async def _stream_events(self, response: Any, req_id: Any, started: float,
                             truncated: list[str]) -> AsyncGenerator[dict, None]:
        usage: dict[str, Any] = {}
        finish_reason = None
        first = None
        chunks = 0
        done = False
        # aclosing: leaving the loop early ([DONE]) closes the nested generators now, on this
        # loop; left to the garbage collector, their close would be scheduled on a loop that
        # may already be closed ("Task was destroyed but it is pending!" on stderr).
        lines = response.lines(self.settings.read_timeout)
        try:
            async with contextlib.aclosing(lines), contextlib.aclosing(sse_events(lines)) as events:
                async for data in events:
                    if data.strip() == "[DONE]":
                        done = True
                        break
                    chunk = self._parse_chunk(data)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            chunks += 1
                            first = first if first is not None else time.perf_counter()
                            yield {"type": "delta", "id": req_id, "text": text}
                        finish_reason = choice.get("finish_reason") or finish_reason
        except HTTPFailure as exc:
            if not response.closed_by_us:
                raise OpenAIBackendError(str(exc)) from None
        if response.closed_by_us:
            finish_reason = "cancelled"
        elif not done and finish_reason is None:
            raise OpenAIBackendError(
                f"The server at {self.endpoint.url} closed the stream before the answer was complete."
            )
        end = time.perf_counter()
        tokens = int(usage.get("completion_tokens") or chunks)
        # As the worker counts it: tokens after the first, over the time after the first.
        span = end - first if first is not None else 0.0
        yield {"type": "done", "id": req_id, "finish_reason": finish_reason, "truncated": truncated,
               "usage": {"prompt_tokens": usage.get("prompt_tokens"), "tokens": tokens,
                         "ttft_s": round(first - started, 4) if first is not None else None,
                         "tok_per_s": round((tokens - 1) / span, 2) if span > 0 and tokens > 1 else 0.0,
                         "total_s": round(end - started, 4)}}

    def _parse_chunk(self, data: str) -> dict:
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            raise OpenAIBackendError(
                f"The server at {self.endpoint.url} sent a malformed event stream: "
                f"{data[:80]!r} is not a JSON object."
            )
        if chunk.get("error"):  # vLLM and TGI report mid-stream failures this way
            raise OpenAIBackendError(
                f"The server at {self.endpoint.url} failed mid-answer: "
                f"{error_message(json.dumps(chunk).encode())}"
            )
        return chunk

    async def cancel(self, request_id: Any) -> None:
        """Stop a request by closing its stream; its ``done`` says finish_reason ``cancelled``."""
        response = self._streams.get(request_id)
        if response is not None:
            response.close()

    async def close(self) -> None:
        for response in list(self._streams.values()):
            response.close()
        self._connected = False


class OpenAIClient:
    """Blocking client with the interface of ``WorkerClient`` (CLI, evaluation, benchmarks)."""

    def __init__(self, settings: OpenAISettings):
        self._async = AsyncOpenAIClient(settings)
        self._loop = asyncio.new_event_loop()

    @property
    def model(self) -> str | None:
        return self._async.model

    def connect(self) -> None:
        self._loop.run_until_complete(self._async.connect())

    def info(self) -> dict:
        return self._loop.run_until_complete(self._async.info())

    def generate(self, request_: dict, request_id: Any = None) -> Iterator[dict]:
        """Yield the events of one request; closing the iterator early closes the stream."""
        stream = self._async.generate(request_, request_id)
        try:
            while True:
                try:
                    yield self._loop.run_until_complete(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            try:
                self._loop.run_until_complete(stream.aclose())
            except RuntimeError:  # interrupted mid-step (Ctrl-C): just drop the sockets
                self._loop.run_until_complete(self._async.close())

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._async.close())
            # Finalise any async generator still open (an iterator dropped mid-answer) on
            # this loop, before it closes.
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


BACKENDS = ("worker", "openai")


def parse_backend(settings: dict | str | None) -> dict:
    """Normalise ``{"backend", "name", "url", "model", "api_key_env", ...}``; ValueError on bad input."""
    if settings is None or isinstance(settings, (str, ModelSpec)):
        return {"backend": "worker", "name": settings or "default"}
    if not isinstance(settings, dict):
        raise ValueError("The model setting must be a spec string or an object.")
    backend = settings.get("backend", "worker")
    if backend not in BACKENDS:
        raise ValueError(f"Unknown model backend {backend!r}; use \"worker\" or \"openai\".")
    out = dict(settings, backend=backend)
    if backend == "openai":
        Endpoint.parse(str(settings.get("url") or ""))
        for key in ("model", "api_key_env"):
            if settings.get(key) is not None and not (isinstance(settings[key], str) and settings[key].strip()):
                raise ValueError(f"The backend's {key} must be a non-empty string.")
        for key in ("connect_timeout", "read_timeout", "max_prompt_chars"):
            value = settings.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"The backend's {key} must be a positive number.")
    return out


def openai_settings(settings: dict) -> OpenAISettings:
    """The :class:`OpenAISettings` of a parsed backend dict."""
    fields = ("url", "model", "api_key_env", "connect_timeout", "read_timeout", "max_prompt_chars")
    values = {k: settings[k] for k in fields if settings.get(k) is not None}
    if "max_prompt_chars" in values:
        values["max_prompt_chars"] = int(values["max_prompt_chars"])
    return OpenAISettings(**values)


def make_async_client(settings: dict | str | None) -> AsyncWorkerClient | AsyncOpenAIClient:
    """The asyncio client for a model setting: the local worker or an OpenAI-compatible server."""
    s = parse_backend(settings)
    if s["backend"] == "openai":
        return AsyncOpenAIClient(openai_settings(s))
    return AsyncWorkerClient(s.get("name") or "default", socket_path=s.get("socket_path"),
                        autostart=s.get("autostart", True), base_dir=s.get("base_dir"))


def make_client(settings: dict | str | None) -> WorkerClient | OpenAIClient:
    """The blocking client for a model setting (CLI, evaluation, benchmarks)."""
    s = parse_backend(settings)
    if s["backend"] == "openai":
        return OpenAIClient(openai_settings(s))
    return WorkerClient(s.get("name") or "default", socket_path=s.get("socket_path"),
                        autostart=s.get("autostart", True), base_dir=s.get("base_dir"))
