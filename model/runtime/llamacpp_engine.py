"""llama.cpp inside the worker: GGUF files run as they are, quantized, any architecture.

The ``xllamacpp`` wheel runs llama.cpp's own server in this process. Each request is one
``handle_completions`` call on its own thread (the call blocks until the answer ends and
releases the GIL meanwhile); llama.cpp's slots batch the concurrent ones. What the worker
guarantees, and how it holds here:

- content as data: the prompt is built by our chat format as token ids and sent as a token
  array, so llama.cpp never renders or tokenizes text (a ``<|im_end|>`` inside a file stays
  plain text);
- the budget: counted with the file's own tokenizer (``model.runtime.gguf_tokenizer``) against the
  context window given to llama.cpp;
- streamed deltas: one chunk per token from llama.cpp's stream (it holds back incomplete
  UTF-8 and partial stop strings itself);
- cancel: the stream callback returns True when the request is cancelled, which ends the
  task in its slot before the next decode step;
- prefix reuse: ``cache_prompt`` keeps each slot's KV cache, and a new request takes the
  slot with the longest common prefix (``cached_prompt_tokens`` in the usage);
- repetition control: the DRY sampler by default once an answer repeats a line or sentence,
  over the answer's own tokens (``DEFAULT_DRY``, ``model.runtime.repetition``; measured in
  ``benchmarks/bench_model.py``); off for code completions (``dry=False``: the next line of
  code often repeats one above it; measured in docs/performance.md);
- token healing (``model.prompt.fim``): a request with ``heal`` text carries a grammar that
  makes the answer start with it (``heal_grammar``); that start is not emitted;
- stop tokens: llama.cpp ends a request at the model's end-of-generation tokens only, and
  renders other special tokens as empty text, so a stop string never sees them. A request
  with ``stop_ids`` (code completions: ``model.prompt.fim.stop_token_ids``) asks for each token's
  id (``logprobs``) and ends at the first of them, its text not emitted;
- memory: llama.cpp's server also keeps the states of prompts that left a slot in RAM to
  bring them back (its "prompt cache", 8,192 MiB by default: a worker answering completions
  at new positions grew to 8.6 GB here); we cap it at ``PROMPT_CACHE_MIB`` (256 MiB, about
  ten 1,024-token states of the embedded model; ``STARCHAT_PROMPT_CACHE_MIB``, 0 turns it off);
- prefill in steps (``prefill``): a one-token request on the start of a prompt leaves
  that start in a slot's cache, so the request for the whole prompt that follows has only
  the rest to process. The worker uses it to keep a code completion's prompt from stalling
  a streaming chat (``model.serving.scheduler.LlamaCppScheduler``).

llama.cpp's server always opens an HTTP listener. It is bound to a Unix socket in a
private (0700) temporary folder, the socket file and folder are removed once the model is
loaded (nothing can connect to a path that no longer exists), and every request needs a
random API key as well. No TCP port is opened.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..prompt.chat_format import ChatFormat, chat_format_for, encode_text
from ..prompt.fim import Healing
from .cpu_watch import CpuWatch
from .gguf_meta import GGUFError, read_metadata
from .llamacpp_server import start_server
from .llamacpp_threads import ServerSet
from .repetition import DRY_ALLOWED_LENGTH, DRY_BASE, DRY_BREAKERS, DRY_MULTIPLIER, RepeatWatch
from .speculation import Speculation
from .speculation import default as default_speculation

log = logging.getLogger(__name__)

ENGINE_NAME = "llama.cpp"
# The window given to llama.cpp (the file's own when smaller). Its KV cache is allocated up
# front and shared by the slots: 4,096 tokens cost ~94 MB for the embedded model.
MAX_CONTEXT = int(os.environ.get("STARCHAT_MAX_CONTEXT", 4096))
SLOTS = int(os.environ.get("STARCHAT_LLAMACPP_SLOTS", 4))
PROMPT_CACHE_MIB = 256  # llama.cpp's RAM cache of prompt states that left a slot (its default: 8,192)
BATCH = 256  # prompt tokens per llama.cpp step (see load)
CACHE_REUSE = 64  # smallest cached chunk reused by shifting (see load)
# Repetition control (model.runtime.repetition): llama.cpp's DRY sampler with its recommended
# multiplier, base and allowed length, engaged once the answer repeats a line or sentence
# and then over the answer's own tokens ("after_repeat"). From the first token it also
# penalised repeating the prompt's code (a function's signature, its names): HumanEval fell
# from 12 to 7 of 164 over the whole window, to 11 over the last 64 tokens (docs/performance.md,
# benchmarks/bench_model.py quality). Without "after_repeat" the settings apply from the first
# token, over ``dry_penalty_last_n`` tokens (the whole window when not given).
DEFAULT_DRY = {"dry_multiplier": DRY_MULTIPLIER, "dry_base": DRY_BASE, "dry_allowed_length": DRY_ALLOWED_LENGTH,
               "dry_sequence_breakers": list(DRY_BREAKERS), "after_repeat": True}


def available() -> bool:
    """True when llama.cpp can serve GGUF specs here (the wheel imports, not forced off)."""
    if os.environ.get("STARCHAT_ENGINE", "").lower() == "torch":
        return False
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        return False
    return True


def prompt_cache_mib() -> int:
    """The cap on llama.cpp's RAM cache of prompt states: ``STARCHAT_PROMPT_CACHE_MIB`` or
    ``PROMPT_CACHE_MIB``; ValueError with a sentence for a value that is not a whole number >= 0."""
    value = os.environ.get("STARCHAT_PROMPT_CACHE_MIB", "").strip()
    if not value:
        return PROMPT_CACHE_MIB
    if not value.isdigit():
        raise ValueError(f"STARCHAT_PROMPT_CACHE_MIB={value!r} is not a whole number of MiB (0 turns the cache off).")
    return int(value)


def default_threads() -> int:
    if os.environ.get("STARCHAT_THREADS"):
        return max(1, int(os.environ["STARCHAT_THREADS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass
class Outcome:
    usage: dict
    finish_reason: str


class LlamaCppEngine:
    """A GGUF model served by llama.cpp, with our chat format and tokenizer in front."""

    name = ENGINE_NAME

    def __init__(self, server: Any, tokenizer: Any, context_window: int, model_name: str,
                 api_key: str, chat_format: ChatFormat | None = None, dry: dict | None = None,
                 adapter: str | None = None, servers: ServerSet | None = None):
        """``servers``: the quiet and busy servers (``model.runtime.llamacpp_threads``); by
        default ``server`` alone."""
        self.servers = servers or ServerSet(server, quiet_threads=0)
        self.adapter = adapter  # a LoRA adapter GGUF loaded on top of the model (id 0)
        # how much of it a completion that sets no adapter_scale applies (load() sets the file's)
        self.completion_adapter_scale = 1.0
        self.tokenizer = tokenizer
        self.context_window = context_window
        self.model_name = model_name
        self.chat_format = chat_format or chat_format_for(tokenizer, model_name=model_name)
        self.dry = DEFAULT_DRY if dry is None else dry
        self._api_key = api_key
        self.slots = SLOTS

    @property
    def server(self) -> Any:
        """The llama.cpp server on all cores (setting None stops every server of the engine)."""
        return self.servers.quiet

    @server.setter
    def server(self, server: Any) -> None:
        if server is None:
            self.servers.close()
        self.servers.quiet = server

    @property
    def dry(self) -> dict:
        """The repetition control settings, as set (``after_repeat`` included)."""
        return {**self._dry, "after_repeat": True} if self.dry_after_repeat else dict(self._dry)

    @dry.setter
    def dry(self, settings: dict) -> None:
        """Settings as in ``DEFAULT_DRY``; ``{}`` turns repetition control off."""
        settings = dict(settings)
        self.dry_after_repeat = bool(settings.pop("after_repeat", False))
        if settings.get("dry_multiplier"):
            # (without a window: the whole context; llama.cpp's -1 is refused by its server)
            settings.setdefault("dry_penalty_last_n", self.context_window)
        else:
            self.dry_after_repeat = False
        self._dry = settings

    def request_body(self, prompt_ids: Sequence[int], params: Any, stop_ids: Sequence[int] = (),
                     slot: int | None = None, heal: str = "", dry: bool = True) -> dict:
        """The llama.cpp completion request for our GenerationParams (``slot``: run in that
        slot, waiting for it if busy; None lets llama.cpp pick by the cached prompt; ``heal``:
        text the answer must start with; ``dry``: the engine's DRY settings, which code
        completions go without: code repeats what is around it)."""
        # (a healed answer's stop strings are cut by Healing, after the healed text)
        stops = list(self.chat_format.stop_strings) + ([] if heal else list(params.stop))
        body: dict[str, Any] = {
            "prompt": [int(i) for i in prompt_ids],
            "stream": True,
            "n_predict": params.max_new_tokens,
            "temperature": float(params.temperature),
            "top_k": int(params.top_k),
            "top_p": float(params.top_p),
            "min_p": 0.0,  # llama.cpp's default is 0.05; ours is no filter
            "repeat_penalty": float(params.repetition_penalty),
            "cache_prompt": True,
            "stop": stops,
            "stream_options": {"include_usage": True},
            # counters in every chunk: a request our callback ends gets no final ones
            "timings_per_token": True,
        }
        if slot is not None:
            body["id_slot"] = int(slot)
        if params.seed is not None:
            body["seed"] = int(params.seed) & 0xFFFFFFFF
        if stop_ids:
            body["logprobs"] = 1  # each chunk then names its token ids
        if heal:
            body["grammar"] = heal_grammar(heal)
        if dry:
            body.update(self._dry)
        if self.adapter:
            # per request: the adapter as trained (1), the base alone (0), or between
            body["lora"] = [{"id": 0, "scale": float(getattr(params, "adapter_scale", 1.0))}]
        return body

    def prefill(self, prompt_ids: Sequence[int], cancel: threading.Event, slot: int | None = None,
                params: Any = None) -> dict:
        """Process ``prompt_ids`` into a slot's cache (one token generated, not shown); the usage.
        ``params``: the request's, so the cache is built with its adapter scale (llama.cpp
        drops a slot's cache when the next request's adapter scale differs)."""
        from ..prompt.params import GenerationParams

        one = replace(params, max_new_tokens=1) if params is not None else GenerationParams(max_new_tokens=1)
        return self.run(prompt_ids, one, cancel, lambda _text: None, slot=slot).usage

    def run(self, prompt_ids: Sequence[int], params: Any, cancel: threading.Event,
            on_delta: Callable[[str], None], stop_ids: Sequence[int] = (), slot: int | None = None,
            heal: str = "", dry: bool = True) -> Outcome:
        """Generate on the calling thread, streaming text to ``on_delta``; blocks until done.

        ``stop_ids``: token ids that end the answer (their text is not emitted); ``heal``: the
        answer starts with this text, which is not emitted either; ``dry``: repetition
        control (see ``request_body``). With the engine's ``after_repeat`` setting (the
        default) DRY waits until the answer repeats a line or sentence (``RepeatWatch``); the
        request ends there and goes on as a new one with DRY over the answer's own tokens
        (``model.runtime.repetition``).
        """
        if not prompt_ids:
            raise ValueError("The prompt is empty: give at least one message or token.")
        t_start = time.perf_counter()
        watch = RepeatWatch() if dry and self.dry_after_repeat and not (heal or stop_ids) else None
        server, threads = self.servers.pick()
        # A chat answer that starts on all cores moves to the busy server once the machine is busy
        # (model.runtime.llamacpp_threads); a code completion is short and stays.
        movable = self.servers.adaptive and not (heal or stop_ids)
        body = self.request_body(prompt_ids, params, stop_ids, slot, heal, dry and watch is None)
        # (no ``logprobs`` to learn the answer's token ids for a move: llama.cpp then computes
        # every token's probabilities, ~10% of quiet decode measured; a moved answer goes on
        # from its text, encoded again)
        part = self._stream(body, params, cancel, on_delta, stop_ids, heal, watch, server, movable)
        while part.moved and not cancel.is_set():
            server, threads = self.servers.pick()
            answer_ids = encode_text(self.tokenizer, part.text)
            step = min(params.max_new_tokens - part.usage["tokens"],
                       self.context_window - len(prompt_ids) - len(answer_ids))
            if step <= 0:
                part.moved, part.finish_reason = False, "length"
                break
            log.debug("the machine is busy: the answer goes on with %d thread(s) after %d tokens",
                      threads, part.usage["tokens"])
            body = self.request_body(list(prompt_ids) + answer_ids, replace(params, max_new_tokens=step),
                                     slot=slot, dry=dry and watch is None)
            part = part.then(self._stream(body, params, cancel, on_delta, (), "", watch, server, False))
        usage, reason = part.usage, part.finish_reason
        if watch is not None and part.repeated:
            usage, reason = self._go_on_with_dry(prompt_ids, params, cancel, on_delta, slot, part)
        usage["total_s"] = round(time.perf_counter() - t_start, 4)
        usage["threads"] = threads
        return Outcome(usage=usage, finish_reason=reason)

    def _go_on_with_dry(self, prompt_ids: Sequence[int], params: Any, cancel: threading.Event,
                        on_delta: Callable[[str], None], slot: int | None, part: _Part) -> tuple[dict, str]:
        """Continue an answer that repeated itself, with DRY over its own tokens only: each
        request's window is the answer so far, and it runs for at most that many tokens, so
        the window never reaches back into the prompt and doubles from one request to the
        next (a loop longer than the window when it began is still caught). The usage and
        finish reason of the whole answer."""
        text, tokens, prefill_s = part.text, part.usage["tokens"], part.usage["prefill_s"]
        drafted, kept = part.usage["draft_tokens"], part.usage["draft_accepted"]
        left, reason, rest = params.max_new_tokens - tokens, "length", part
        log.debug("answer repeats itself after %d tokens: DRY from here", tokens)
        while left > 0 and not cancel.is_set():
            answer_ids = encode_text(self.tokenizer, text)
            room = self.context_window - len(prompt_ids) - len(answer_ids)  # (re-tokenized: may differ)
            step = min(left, len(answer_ids), room)
            if step <= 0:
                break
            body = self.request_body(list(prompt_ids) + answer_ids, replace(params, max_new_tokens=step),
                                     slot=slot, dry=True)
            body["dry_penalty_last_n"] = max(1, len(answer_ids))
            rest = self._stream(body, params, cancel, on_delta, (), "", None, self.servers.pick()[0], False)
            text, tokens, left = text + rest.text, tokens + rest.usage["tokens"], left - rest.usage["tokens"]
            prefill_s += rest.usage["prefill_s"]
            drafted, kept = drafted + rest.usage["draft_tokens"], kept + rest.usage["draft_accepted"]
            reason = rest.finish_reason
            if reason != "length" or rest.usage["tokens"] <= 0:
                break
        if cancel.is_set():
            reason = "cancelled"
        usage = {**rest.usage, "tokens": tokens, "prefill_s": round(prefill_s, 4), "draft_tokens": drafted,
                 "draft_accepted": kept}
        for key in ("prompt_tokens", "cached_prompt_tokens", "ttft_s"):
            usage[key] = part.usage[key]
        return usage, reason

    def _stream(self, body: dict, params: Any, cancel: threading.Event, on_delta: Callable[[str], None],
                stop_ids: Sequence[int], heal: str, watch: RepeatWatch | None, server: Any,
                movable: bool = False) -> _Part:
        """One llama.cpp request on ``server``, its text streamed to ``on_delta``; ends early
        (``repeated``) once ``watch`` sees the answer repeat itself, and (``moved``, when
        ``movable``) once a better server is ready for the rest (``ServerSet.better_than``)."""
        t0 = time.perf_counter()
        state: dict[str, Any] = {"first": None, "final": None, "error": None, "stopped": False,
                                 "repeated": False, "moved": False, "text": [], "tokens": 0, "timings": {}}
        stop_set = frozenset(int(i) for i in stop_ids)
        healing = Healing(heal, params.stop if heal else ())

        def on_chunk(chunk: Any) -> bool:
            if cancel.is_set():  # chunks llama.cpp made before it saw the stop are not shown
                return True
            if not isinstance(chunk, dict):
                return False
            if "error" in chunk or ("message" in chunk and "choices" not in chunk):
                err = chunk.get("error", chunk)
                state["error"] = err.get("message", str(err)) if isinstance(err, dict) else str(err)
                return True
            for choice in chunk.get("choices") or ():
                text = choice.get("text") or ""
                finished = bool(choice.get("finish_reason"))
                stopped = False
                if stop_set:
                    text, stopped = _cut_at_stop_token(choice, text, stop_set)
                    if stopped:
                        state["stopped"] = True
                if not (finished or stopped):  # (the stop token is no answer token)
                    state["tokens"] += 1
                text = healing.take(text)
                if healing.stopped:
                    state["stopped"] = True
                if text:
                    if state["first"] is None:
                        state["first"] = time.perf_counter()
                    state["text"].append(text)
                    on_delta(text)
                    if watch is not None and not finished and watch.feed(text):
                        state["repeated"] = True
                if finished:
                    state["final"] = chunk
                elif movable and not state["repeated"] and self.servers.better_than(server):
                    state["moved"] = True
            if chunk.get("timings"):
                state["timings"] = chunk["timings"]
            if chunk.get("usage") is not None:
                state["final"] = chunk
            return cancel.is_set() or state["stopped"] or state["repeated"] or state["moved"]

        if not cancel.is_set():
            server.handle_completions(body, on_chunk)
            if (rest := healing.rest()) and not cancel.is_set():
                on_delta(rest)
        t_end = time.perf_counter()
        if state["error"]:
            raise RuntimeError(state["error"])
        final = state["final"] or {}
        reason = "cancelled" if cancel.is_set() else None
        if state["stopped"] or state["repeated"] or state["moved"]:
            reason = "stop"
        if reason is None:
            choices = final.get("choices") or [{}]
            reason = choices[0].get("finish_reason") or "stop"
            reason = reason if reason in ("stop", "length") else "stop"
        usage = final.get("usage") or {}
        timings = final.get("timings") or state["timings"]
        first = state["first"]
        return _Part(
            usage={
                "prompt_tokens": int(usage.get("prompt_tokens", len(body["prompt"]))),
                "cached_prompt_tokens": int(timings.get("cache_n", 0)),
                "tokens": int(usage.get("completion_tokens", state["tokens"])),
                "ttft_s": round(first - t0, 4) if first else None,
                "tok_per_s": round(float(timings.get("predicted_per_second", 0.0)), 2),
                "prefill_s": round(float(timings.get("prompt_ms", 0.0)) / 1000, 4),
                "total_s": round(t_end - t0, 4),
                # draft-free speculation (model.runtime.speculation): tokens drafted, kept
                "draft_tokens": int(timings.get("draft_n", 0)),
                "draft_accepted": int(timings.get("draft_n_accepted", 0)),
            },
            finish_reason=reason, text="".join(state["text"]),
            repeated=state["repeated"] and not cancel.is_set(), moved=state["moved"] and not cancel.is_set())


@dataclass
class _Part:
    """One llama.cpp request of an answer (an answer that repeats itself has two or more, and
    so has one that moved to another server), or the requests so far joined (``then``)."""
    usage: dict
    finish_reason: str
    text: str
    repeated: bool
    moved: bool = False

    def then(self, rest: _Part) -> _Part:
        """This part followed by ``rest``: the first one's prompt figures, the sums, the last
        one's rates and ending."""
        usage = {**rest.usage}
        for key in ("tokens", "prefill_s", "draft_tokens", "draft_accepted"):
            usage[key] = round(self.usage[key] + rest.usage[key], 4)
        for key in ("prompt_tokens", "cached_prompt_tokens", "ttft_s"):
            usage[key] = self.usage[key]
        return _Part(usage, rest.finish_reason, self.text + rest.text, rest.repeated, rest.moved)


def heal_grammar(text: str) -> str:
    """A GBNF grammar for answers that start with ``text`` (every character escaped)."""
    def escape(ch: str) -> str:
        code = ord(ch)
        if ch.isascii() and ch.isalnum():
            return ch
        return f"\\x{code:02X}" if code < 0x80 else f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"

    return 'root ::= "' + "".join(escape(ch) for ch in text) + '" .*'


def _cut_at_stop_token(choice: dict, text: str, stop_ids: frozenset[int]) -> tuple[str, bool]:
    """The text of ``choice`` before its first stop token, and whether there was one."""
    content = (choice.get("logprobs") or {}).get("content") or ()
    for k, entry in enumerate(content):
        if entry.get("id") in stop_ids:
            return "".join(e.get("token", "") for e in content[:k]), True
    return text, False


def load(path: str | Path, name: str | None = None, *, threads: int | None = None,
         slots: int = SLOTS, max_context: int = MAX_CONTEXT, dry: dict | None = None,
         adapter: str | Path | None = None, completion_adapter_scale: float = 1.0,
         speculation: Speculation | None | str = "default") -> LlamaCppEngine:
    """Start llama.cpp on a GGUF file, with a LoRA ``adapter`` GGUF on top when given (each
    request sets its scale: ``GenerationParams.adapter_scale``; completions that do not,
    ``completion_adapter_scale``: the adapter file's own, which the caller reads with
    ``model.runtime.spec.adapter_completion_scale``); raises ValueError with a
    sentence when it cannot. ``speculation``: draft-free speculative decoding for every
    request (``model.runtime.speculation``; None: off; by default ``speculation.default()``)."""
    import xllamacpp

    from ..prompt.tokenizer import load_lite_tokenizer

    path = Path(path)
    try:
        meta = read_metadata(path)
    except GGUFError as exc:
        raise ValueError(str(exc)) from None
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ValueError(f"{path.name} names no architecture (general.architecture), so it is not a model file")
    trained = int(meta.get(f"{arch}.context_length") or max_context)
    window = max(64, min(trained, max_context))

    fixed_threads = threads or (default_threads() if os.environ.get("STARCHAT_THREADS") else None)
    threads = fixed_threads or default_threads()
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = window
    params.n_parallel = slots
    # llama.cpp checks for cancelled requests and serves the other slots between batches: a
    # 256-token batch keeps that to ~1 s of prompt work on 2 CPU cores where the default (2,048)
    # made a whole 1,024-token completion window one uninterruptible step; prefill itself was
    # within 3% (n_ubatch 256 vs 512, docs/performance.md).
    params.n_batch = BATCH
    params.n_ubatch = BATCH
    # A prompt whose start was dropped (a code completion's window sliding one step as the
    # user types, an old turn cut from a long conversation) reuses the cached chunks that
    # follow by shifting their positions, instead of reading them again: measured here, a
    # 1,000-token window moved by 64 tokens found 737 of 800 tokens in the cache (0 without).
    params.n_cache_reuse = CACHE_REUSE
    params.kv_unified = True  # the slots share one window-sized cache; each may use all of it
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.cache_prompt = True
    params.cache_ram_mib = prompt_cache_mib()
    params.ctx_shift = False
    if adapter is not None:
        params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(adapter), 1.0)]
    params.endpoint_metrics = True
    chosen = default_speculation() if isinstance(speculation, str) else speculation
    if chosen is not None:
        chosen.apply(params, xllamacpp)
    # llama.cpp's own log (per request and slot) only on request: the worker's DEBUG level is
    # for our timings, which llama.cpp's lines would slow and bury.
    params.verbosity = 1 if os.environ.get("STARCHAT_LLAMACPP_VERBOSE") else -1
    api_key = secrets.token_urlsafe(32)
    params.api_keys = [api_key]

    def start(n_threads: int) -> Any:
        """One llama.cpp server of the file on ``n_threads`` threads."""
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = n_threads
        return start_server(params)

    try:
        server = start(threads)
    except RuntimeError:  # one message for every failure: ask llama.cpp's log why
        from .llamacpp_errors import explain

        raise ValueError(explain(path, arch, window, slots)) from None
    # All cores while the machine is quiet, half of them while other processes use the cores
    # (model.runtime.llamacpp_threads); a count that was asked for holds throughout.
    adaptive = fixed_threads is None and threads >= 2
    servers = ServerSet(server, threads, start=start, busy_threads=max(1, threads // 2),
                        watch=CpuWatch().start() if adaptive else None)
    # After llama.cpp: a file it refuses fails in a second, before any tokenizer conversion.
    tokenizer = load_lite_tokenizer(tokenizer_folder_for(path))
    engine = LlamaCppEngine(server, tokenizer, window, name or path.stem, api_key, dry=dry,
                            adapter=str(adapter) if adapter is not None else None, servers=servers)
    engine.slots = slots
    engine.completion_adapter_scale = completion_adapter_scale
    return engine


def tokenizer_folder_for(path: Path) -> Path:
    from .gguf_tokenizer import tokenizer_folder

    return tokenizer_folder(path)
