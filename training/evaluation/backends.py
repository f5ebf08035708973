"""Where answers come from: the model in-process, the shared worker, or an OpenAI-style URL.

Every backend has `complete(messages, params, stop_when=None) -> Completion`. The default for
evaluation is in-process, on the engine the spec runs on in the worker
(`model.runtime.spec.ModelSpec.engine`): `LlamaCppBackend` for GGUF files (the default spec
among them; DRY repetition control as served), `EngineBackend` (torch) for folders. So a
figure for `--model default` is a figure for what users get. A batch job should not compete
with the editor's shared worker, and in-process it can pick the chat format (template or
dialogue prompting) per run.
The worker and OpenAI-compatible backends are the editor's own clients (`model.serving.client`,
`model.backends.openai_backend`): one wire format, one set of parameter rules (`model.prompt.params`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from model.runtime.spec import ModelSpec

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
    """The model loaded in this process through model.runtime.loading + model.runtime.engine."""

    def __init__(self, spec: ModelSpec | str = "default", *, chat_mode: str = "auto", dry: bool = True) -> None:
        """``dry``: the engine's repetition control (``model.runtime.repetition``) as served;
        False turns it off (benchmarks compare both)."""
        from model.prompt.chat_format import chat_format_for
        from model.runtime.engine import Engine
        from model.runtime.loading import load_model

        spec = ModelSpec.parse(spec)
        self.spec = str(spec)
        self.loaded = load_model(spec)
        self.chat_format = chat_format_for(self.loaded.tokenizer, mode=chat_mode)
        self.chat_mode = self.chat_format.kind
        self.engine = Engine(self.loaded, chat_format=self.chat_format)
        self.engine.dry = dry

    def complete(self, messages: list[dict], params: dict, stop_when: StopWhen = None,
                 prefix: str = "") -> Completion:
        """Generate one reply; stops early once `stop_when(text_so_far)` is true.

        `prefix` is put in the model's mouth: the reply starts with it (it is not returned).
        """
        if not prefix:
            return self._run(messages, params, stop_when)
        from model.prompt.chat_format import encode_text

        ids = self.chat_format.encode(messages) + encode_text(self.loaded.tokenizer, prefix)
        return self._run(ids, params, stop_when)

    def complete_raw(self, prompt: str, params: dict, stop_when: StopWhen = None) -> Completion:
        """Continue plain text with no chat format (HumanEval on base models)."""
        ids = self.loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return self._run(list(ids), params, stop_when)

    def _run(self, prompt, params: dict, stop_when: StopWhen) -> Completion:
        from model.prompt.params import GenerationParams

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


class LlamaCppBackend:
    """A GGUF spec on llama.cpp in this process (``model.runtime.llamacpp_engine``), one request
    at a time. ``dry``: the engine's DRY sampler settings; None keeps the served default, ``{}``
    turns repetition control off (benchmarks compare both)."""

    def __init__(self, spec: ModelSpec | str = "default", *, chat_mode: str = "auto", dry: dict | None = None,
                 engine=None) -> None:
        from model.prompt.chat_format import chat_format_for

        spec = ModelSpec.parse(spec)
        if engine is None:
            from model.runtime import llamacpp_engine

            engine = llamacpp_engine.load(spec.location, spec.display_name, slots=1, dry=dry, adapter=spec.adapter)
        elif dry is not None:
            engine.dry = dict(dry)
        self.spec, self.engine, self.tokenizer = str(spec), engine, engine.tokenizer
        self.chat_format = (engine.chat_format if chat_mode == "auto"
                            else chat_format_for(engine.tokenizer, mode=chat_mode))
        self.chat_mode = self.chat_format.kind

    def complete(self, messages: list[dict], params: dict, stop_when: StopWhen = None,
                 prefix: str = "") -> Completion:
        """Generate one reply (see ``EngineBackend.complete``)."""
        from model.prompt.chat_format import encode_text

        ids = self.chat_format.encode(messages)
        if prefix:
            ids = ids + encode_text(self.tokenizer, prefix)
        return self._run(ids, params, stop_when)

    def complete_raw(self, prompt: str, params: dict, stop_when: StopWhen = None) -> Completion:
        """Continue plain text with no chat format (HumanEval on base models)."""
        return self._run(list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"]), params, stop_when)

    def _run(self, ids: list[int], params: dict, stop_when: StopWhen) -> Completion:
        from model.prompt.params import GenerationParams

        cancel, parts = threading.Event(), []

        def on_delta(text: str) -> None:
            parts.append(text)
            if stop_when is not None and stop_when("".join(parts)):
                cancel.set()

        try:
            outcome = self.engine.run(ids, GenerationParams.from_dict(params), cancel, on_delta)
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        finish = outcome.finish_reason or "stop"
        if finish == "cancelled" and stop_when is not None:
            finish = "stop"
        return Completion("".join(parts), dict(outcome.usage or {}), finish)


class ClientBackend:
    """A model behind a client with ``model.serving.client.WorkerClient``'s interface: the shared
    worker, or an OpenAI-compatible server through ``model.backends.openai_backend`` (one HTTP
    client for the editor and the evaluation)."""

    def __init__(self, client, spec: str, chat_mode: str) -> None:
        self.client = client
        self.spec = spec
        self.chat_mode = chat_mode

    def complete(self, messages: list[dict], params: dict, stop_when: StopWhen = None) -> Completion:
        from model.serving.client import WorkerError

        text, usage, finish = "", {}, "stop"
        events = self.client.generate({"messages": messages, "params": params})
        try:
            for event in events:
                kind = event.get("type")
                if kind == "delta":
                    text += event["text"]
                    if stop_when is not None and stop_when(text):
                        break  # closing the events (below) cancels the request
                elif kind == "done":
                    usage, finish = event.get("usage", {}), event.get("finish_reason", "stop")
                elif kind == "error":
                    raise BackendError(event.get("message", "The model failed."))
        except WorkerError as exc:  # a dead worker, an unreachable or broken server
            raise BackendError(str(exc)) from None
        finally:
            events.close()
        return Completion(text, usage, finish)

    def close(self) -> None:
        self.client.close()


class WorkerBackend(ClientBackend):
    """The shared model worker (the same process the language server uses)."""

    def __init__(self, spec: ModelSpec | str = "default") -> None:
        from model.serving.client import WorkerClient

        client = WorkerClient(spec)
        super().__init__(client, str(client.model), "worker")


class OpenAIBackend(ClientBackend):
    """Any OpenAI-compatible chat-completions endpoint (the judge can live elsewhere)."""

    def __init__(self, url: str, model: str, *, api_key_env: str = DEFAULT_API_KEY_ENV,
                 timeout_s: float = 120.0) -> None:
        from model.backends.openai_backend import make_client

        base = url.strip().rstrip("/")
        base = base.removesuffix("/chat/completions")  # the endpoint's own URL is accepted too
        try:
            client = make_client({"backend": "openai", "url": base, "model": model,
                                  "api_key_env": api_key_env, "read_timeout": timeout_s})
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        super().__init__(client, url, "remote")
        self.model = model


def make_backend(spec: ModelSpec | str, *, via_worker: bool = False, chat_mode: str = "auto"):
    """The backend for a model spec: in-process on the spec's own engine by default, the shared
    worker on request."""
    spec = ModelSpec.parse(spec)  # a bad spec fails here in a second, before torch is imported
    if via_worker:
        if chat_mode != "auto":
            raise BackendError("The shared worker uses the model's own chat format; drop --chat-format or --via-worker.")
        return WorkerBackend(spec)
    if spec.engine() == "llama.cpp":
        return LlamaCppBackend(spec, chat_mode=chat_mode)
    return EngineBackend(spec, chat_mode=chat_mode)
