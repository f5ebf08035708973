"""Where answers come from: the model in-process, the shared worker, or an OpenAI-style URL.

Every backend has `complete(messages, params, stop_when=None) -> Completion`. The default for
evaluation is in-process (`EngineBackend`): a batch job should not compete with the editor's
shared worker, and it can pick the chat format (template or dialogue prompting) per run.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

DEFAULT_API_KEY_ENV = "STARCHAT_JUDGE_API_KEY"


class BackendError(RuntimeError):
    """A model or endpoint could not answer; the message is one sentence for the user."""


@dataclass
class Completion:
    text: str
    usage: dict = field(default_factory=dict)
    finish_reason: str = "stop"


StopWhen = Callable[[str], bool] | None


class EngineBackend:
    """The model loaded in this process through model.loading + model.engine."""

    def __init__(self, spec: str = "default", *, chat_mode: str = "auto") -> None:
        from model.chat_format import chat_format_for
        from model.engine import Engine
        from model.loading import load_model

        self.spec = spec
        self.loaded = load_model(spec)
        self.chat_format = chat_format_for(self.loaded.tokenizer, mode=chat_mode)
        self.chat_mode = self.chat_format.kind
        self.engine = Engine(self.loaded, chat_format=self.chat_format)

    def complete(self, messages: list[dict], params: dict, stop_when: StopWhen = None,
                 prefix: str = "") -> Completion:
        """Generate one reply; stops early once `stop_when(text_so_far)` is true.

        `prefix` is put in the model's mouth: the reply starts with it (it is not returned).
        """
        if not prefix:
            return self._run(messages, params, stop_when)
        from model.chat_format import encode_text

        ids = self.chat_format.encode(messages) + encode_text(self.loaded.tokenizer, prefix)
        return self._run(ids, params, stop_when)

    def complete_raw(self, prompt: str, params: dict, stop_when: StopWhen = None) -> Completion:
        """Continue plain text with no chat format (HumanEval on base models)."""
        ids = self.loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return self._run(list(ids), params, stop_when)

    def _run(self, prompt, params: dict, stop_when: StopWhen) -> Completion:
        from model.engine import GenerationParams

        cancel = threading.Event()
        stream = self.engine.generate(prompt, GenerationParams.from_dict(params), cancel=cancel)
        text = ""
        for delta in stream:
            text += delta
            if stop_when is not None and stop_when(text):
                cancel.set()  # the engine ends the stream before the next decode step
        finish = stream.finish_reason or "stop"
        if finish == "cancelled" and stop_when is not None:
            finish = "stop"
        return Completion(text, dict(stream.usage or {}), finish)


class WorkerBackend:
    """The shared model worker (the same process the language server uses)."""

    def __init__(self, spec: str = "default") -> None:
        from model.client import WorkerClient

        self.spec = spec
        self.chat_mode = "worker"
        self.client = WorkerClient(spec)

    def complete(self, messages: list[dict], params: dict, stop_when: StopWhen = None) -> Completion:
        text, usage, finish = "", {}, "stop"
        events = self.client.generate({"messages": messages, "params": params})
        for event in events:
            kind = event.get("type")
            if kind == "delta":
                text += event["text"]
                if stop_when is not None and stop_when(text):
                    close = getattr(events, "close", None)
                    if close:
                        close()  # leaving the iteration cancels the request in the worker
                    break
            elif kind == "done":
                usage, finish = event.get("usage", {}), event.get("finish_reason", "stop")
            elif kind == "error":
                raise BackendError(event.get("message", "The model worker failed."))
        return Completion(text, usage, finish)


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions endpoint (the judge can live elsewhere)."""

    def __init__(self, url: str, model: str, *, api_key_env: str = DEFAULT_API_KEY_ENV,
                 timeout_s: float = 120.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise BackendError(f"The judge URL {url!r} must start with http:// or https://.")
        base = url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.spec = url
        self.chat_mode = "remote"
        self.model = model
        self.api_key = os.environ.get(api_key_env, "")
        self.timeout_s = timeout_s

    def complete(self, messages: list[dict], params: dict, stop_when: StopWhen = None) -> Completion:
        body = {
            "model": self.model, "messages": messages,
            "temperature": float(params.get("temperature", 0.0)),
            "max_tokens": int(params.get("max_new_tokens", 512)),
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        start = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise BackendError(f"The judge endpoint answered HTTP {exc.code} ({exc.reason}).") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise BackendError(f"The judge endpoint {self.url} could not be reached: {exc}.") from exc
        except json.JSONDecodeError as exc:
            raise BackendError("The judge endpoint did not answer with JSON.") from exc
        try:
            choice = payload["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError("The judge endpoint's answer has no choices[0].message.content.") from exc
        usage = dict(payload.get("usage") or {})
        usage["total_s"] = time.monotonic() - start
        return Completion(text, usage, choice.get("finish_reason") or "stop")


def make_backend(spec: str, *, via_worker: bool = False, chat_mode: str = "auto"):
    """The backend for a model spec: in-process by default, the shared worker on request."""
    from model.loading import resolve_spec

    resolve_spec(spec)  # a bad spec fails here in a second, before torch is imported
    if via_worker:
        if chat_mode != "auto":
            raise BackendError("The shared worker uses the model's own chat format; drop --chat-format or --via-worker.")
        return WorkerBackend(spec)
    return EngineBackend(spec, chat_mode=chat_mode)
