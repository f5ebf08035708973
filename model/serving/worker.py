"""The model worker: one process owns the model and serves every client of the user.

Language servers (one per editor window), ``starchat ask`` and ``starchat chat`` connect to
it over a Unix socket (mode 0600 in a 0700 directory), starting it if absent
(``model.serving.client``). TCP is used only when configured, on loopback by default, and then the
first frame must be a ``hello`` carrying the shared secret.

The socket is bound before the model loads, so clients connect at once and get
``progress`` frames while they wait. The engine depends on the spec (``loading.engine_for``):
GGUF files run on llama.cpp (``model.runtime.llamacpp_engine``), where the scheduler thread builds
each request's prompt ids and hands the request to a thread of its own, llama.cpp's slots
batching the concurrent ones (a code completion's prompt goes in small steps while a chat
streams: ``Scheduler._prefill_aside``); everything else runs on the torch engine, where one
scheduler thread owns the model and advances every active request one token per turn: requests past their prefill share one batched forward
pass (``Engine.step_batch``; ``--no-batch`` steps them round robin), so concurrent clients
stream at the same time and a short request is never stuck behind a long one. ``cancel`` frames and client
disconnects stop a request before its next decode step.

The worker exits by itself after ``--idle-timeout`` seconds without clients, a few seconds
after a failed model load once no client is connected, or when its socket file is removed
or replaced (so a test's temp dir takes its worker with it). A spec whose files are bad
(``model.runtime.model_files.preflight``) ends it before it opens its socket.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runtime.paths import unix_address
from . import protocol
from .protocol import ProtocolError

log = logging.getLogger("starchat.worker")
DEFAULT_IDLE_TIMEOUT = float(os.environ.get("STARCHAT_WORKER_IDLE_TIMEOUT", 900))
# Decode concurrent requests in one forward pass (see Engine.step_batch); off = round robin.
# After a failed load, exit once no client has been connected for this long.
LOAD_ERROR_LINGER_S = float(os.environ.get("STARCHAT_WORKER_LOAD_ERROR_LINGER", 3))
DEFAULT_BATCH = os.environ.get("STARCHAT_WORKER_BATCH", "1").lower() not in ("0", "false", "no")
# llama.cpp, while a chat streams: a code completion's prompt goes in steps of at most this
# many new tokens, the chat decoding on its own between two steps (Scheduler._prefill_aside).
FIM_PREFILL_CHUNK = int(os.environ.get("STARCHAT_FIM_PREFILL_CHUNK", 32))
# Without a chat, in steps of this many: a chat that starts meanwhile waits for one such step,
# not for a whole window (~1,000 tokens, 3-4 s of prompt work on 2 cores).
FIM_PREFILL_STEP_ALONE = int(os.environ.get("STARCHAT_FIM_PREFILL_STEP", 64))
# ... and the chat has the machine to itself for this many times as long as a step took, so
# completion prompts take at most 1/(1+x) of a streaming chat's time (x = 9: 10%).
CHAT_REST_FACTOR = float(os.environ.get("STARCHAT_FIM_CHAT_REST", 9.0))
# Chat tokens seen between two such steps: two, since the chat's token from the step that
# carried the chunk may arrive after the chunk's own answer.
CHAT_TOKENS_BETWEEN_CHUNKS = 2
# The rest after a completion's answer is capped: one whose long prompt went before the chat
# began would otherwise keep every completion away for the rest of a long chat.
CHAT_REST_MAX_S = 2.0
CHAT_STEP_WAIT_S = 5.0  # a chat in its own prefill sends no tokens: do not wait for ever


@dataclass(eq=False)  # hashed by identity: a request is itself
class Job:
    key: tuple[int, Any]
    request: dict
    emit: Callable[[dict], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    decoder: Any = None
    truncated: list[str] = field(default_factory=list)
    heal: str = ""  # a completion's healed prefix token (model.prompt.fim)

    @property
    def background(self) -> bool:
        """Code completions wait for chat: they run only between chat steps."""
        return "fim" in self.request


def build_prompt(engine: Any, request: dict) -> tuple[list[int], list[str], Any, str]:
    """Validate a generate request and fit it into the context window: (prompt ids, what was
    cut, the generation params, the text the answer must start with and hide).

    A chat request has ``messages`` (or ``system``/``history``/``user_parts``); a code
    completion has ``fim`` (``model.prompt.fim``, which may heal the prefix's last token).
    Every engine consumes the ids made here.
    """
    from ..prompt.budget import fit_request
    from ..prompt.params import GenerationParams

    params = GenerationParams.from_dict(request.get("params"))
    limit = engine.context_window - params.max_new_tokens
    if limit < 16:
        raise ValueError(
            f"max_new_tokens ({params.max_new_tokens}) leaves no room for the prompt in a "
            f"{engine.context_window}-token context window."
        )
    if "fim" in request:
        from ..prompt.fim import build_fim_prompt

        fim = build_fim_prompt(engine.tokenizer, request["fim"], limit)
        return fim.ids, fim.truncated, params, fim.heal
    fitted = fit_request(engine.chat_format, limit, request)
    return fitted.prompt_ids, fitted.truncated, params, ""


def plan_round(jobs: list[Job], batch: bool, turn: int) -> tuple[list[Job], list[Job], list[Job]]:
    """One scheduler round: (step one by one first, step together, step one by one last).

    Chat comes first: while any chat request is active, at most one code completion takes
    a step of its own per round (its prefill, or its decode without batching), after the
    chat's steps, so it delays a streaming chat by at most one step. Completions past their
    prefill join the batched pass, which costs the chat little. Cancelled requests finish at
    once (no forward pass).
    """
    together = [j for j in jobs if batch and j.decoder.decoding]
    if len(together) < 2:
        together = []
    alone = [j for j in jobs if j not in together]
    first = [j for j in alone if not j.background or j.cancel.is_set()]
    last = [j for j in alone if j not in first]
    if last and any(not j.background for j in jobs):
        last = [last[turn % len(last)]]
    return first, together, last


def reusable_start(cached: list[int], ids: list[int], reuse: int | None = None) -> int:
    """How many leading tokens of ``ids`` llama.cpp can take from a slot that holds ``cached``:
    their common start, then what follows a chunk of at least ``reuse`` tokens found further
    on in the cache (llama.cpp shifts such chunks: ``n_cache_reuse``), as when a completion
    window's start moved by a step."""
    if reuse is None:
        from ..runtime.llamacpp_engine import CACHE_REUSE as reuse
    start = _common_prefix(cached, ids)
    if len(ids) - start < reuse:
        return start
    probe = ids[start : start + reuse]
    first = probe[0]
    for j in range(start, len(cached) - reuse + 1):
        if cached[j] == first and cached[j : j + reuse] == probe:
            return start + _common_prefix(cached[j:], ids[start:])
    return start


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Scheduler(threading.Thread):
    """Loads the model, then interleaves one decode step per active request."""

    def __init__(self, spec: str, load: Callable[[str], Any] | None = None, batch: bool = DEFAULT_BATCH):
        super().__init__(name="starchat-model", daemon=True)
        self.spec = spec
        self.batch = batch
        self._load = load
        self.engine: Any = None
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.info: dict = {"spec": spec, "ready": False, "pid": os.getpid()}
        self._cond = threading.Condition()
        self._pending: list[Job] = []
        self._starting: list[Job] = []  # taken from _pending, not yet running
        self._active: list[Job] = []
        self._running: set[Job] = set()  # requests on their own threads (llama.cpp)
        self._turn = 0
        self._chat_tokens = 0  # deltas of chat requests on llama.cpp, for _prefill_aside
        self._fim_cached: list[int] = []  # the last completion prompt llama.cpp processed
        self._fim_not_before = 0.0  # monotonic time before which no completion prefill starts
        self._fim_stop_ids: list[int] | None = None  # model.prompt.fim.stop_token_ids, once
        # llama.cpp slots: chats keep off the last one, which code completions use, one at a
        # time (see _run_on_own_thread, _take_chat_slot, _fim_slot).
        self._slot_busy: set[int] = set()
        self._slot_used: dict[int, float] = {}
        self._slot_prompts: dict[int, list[int]] = {}
        self._fim_turn = threading.Lock()
        #: When a list, every step is appended as ("step", key) or ("batch", [keys]) (tests);
        #: on llama.cpp ("delta", key) per delta, ("prefill", key, new tokens) per prompt step
        #: of a completion, ("run", key, new tokens) when its request for the answer is sent.
        self.trace: list | None = None

    def submit(self, job: Job) -> None:
        with self._cond:
            if self.load_error:
                job.emit({"type": "error", "id": job.key[1], "message": self.load_error})
                return
            self._pending.append(job)
            self._cond.notify()

    def cancel(self, key: tuple[int, Any]) -> None:
        with self._cond:
            for job in [*self._pending, *self._starting, *self._active, *self._running]:
                if job.key == key:
                    job.cancel.set()
            self._cond.notify_all()  # a completion waiting between prompt steps stops now

    def cancel_connection(self, conn_id: int) -> None:
        with self._cond:
            for job in [*self._pending, *self._starting, *self._active, *self._running]:
                if job.key[0] == conn_id:
                    job.cancel.set()
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        with self._cond:
            return bool(self._pending or self._active or self._running)

    def _load_engine(self) -> None:
        from ..runtime.loading import engine_for

        t0 = time.perf_counter()
        kind = "torch" if self._load is not None else engine_for(self.spec)
        if kind == "llama.cpp":
            self._load_llamacpp()
        else:
            self._load_torch()
        self.info.update({"spec": self.spec, "ready": True, "engine": kind,
                          "load_s": round(time.perf_counter() - t0, 3), "pid": os.getpid()})
        log.info("Model %s ready on %s (%s) in %.1f s", self.info["model"], self.info["device"],
                 kind, self.info["load_s"])

    def _load_llamacpp(self) -> None:
        from ..runtime import llamacpp_engine
        from ..runtime.loading import resolve_spec

        source = resolve_spec(self.spec)
        self.engine = llamacpp_engine.load(source.location, source.name)
        self.info = {
            "model": source.name, "device": "cpu", "context_window": self.engine.context_window,
            "chat_format": self.engine.chat_format.kind, "runner": "llama.cpp", "quantize": "gguf",
            "slots": llamacpp_engine.SLOTS,
        }

    def _load_torch(self) -> None:
        from ..runtime.engine import Engine
        from ..runtime.loading import load_model

        loaded = (self._load or load_model)(self.spec)
        self.engine = Engine(loaded)
        self.info = {
            "model": loaded.name, "device": loaded.device,
            "context_window": loaded.context_window, "chat_format": self.engine.chat_format.kind,
            "runner": loaded.runner_kind, "quantize": loaded.quantize,
        }

    def run(self) -> None:
        try:
            self._load_engine()
        except Exception as exc:
            log.error("Could not load model %s", self.spec, exc_info=True)
            with self._cond:
                self.load_error = f"The model worker could not load {self.spec!r}: {exc}"
                waiting, self._pending = self._pending, []
            for job in waiting:
                job.emit({"type": "error", "id": job.key[1], "message": self.load_error})
            self.ready.set()
            return
        self.ready.set()
        while True:
            with self._cond:
                while not self._pending and not self._active:
                    self._cond.wait()
                new, self._pending = self._pending, []
                self._starting = new  # still reachable by cancel() while its prompt is built
            for job in new:
                self._start(job)
            with self._cond:
                self._starting = []
            self._turn += 1
            first, together, last = plan_round(list(self._active), self.batch, self._turn)
            for job in first:
                self._advance(job)
            if together:
                self._advance_batch(together)
            for job in last:
                self._advance(job)

    def _start(self, job: Job) -> None:
        try:
            prompt_ids, job.truncated, params, job.heal = build_prompt(self.engine, job.request)
        except ValueError as exc:
            job.emit({"type": "error", "id": job.key[1], "message": str(exc)})
            return
        if hasattr(self.engine, "run"):  # llama.cpp: one thread per request, slots batch them
            thread = threading.Thread(target=self._run_on_own_thread, args=(job, prompt_ids, params),
                                      name=f"starchat-request-{job.key[1]}", daemon=True)
            with self._cond:
                self._running.add(job)
            thread.start()
            return
        job.decoder = self.engine.decoder(prompt_ids, params, job.cancel, stop_ids=self._stop_ids(job), heal=job.heal,
                                         dry=False if job.background else None)
        with self._cond:
            self._active.append(job)

    def _stop_ids(self, job: Job) -> list[int]:
        """A code completion ends at any FIM family's end or sentinel token (``model.prompt.fim``)."""
        if not job.background:
            return []
        if self._fim_stop_ids is None:
            from ..prompt.fim import stop_token_ids

            self._fim_stop_ids = stop_token_ids(self.engine.tokenizer)
        return self._fim_stop_ids

    def _take_chat_slot(self, ids: list[int]) -> int | None:
        """A chat's llama.cpp slot, never the completions' one: of the free others, the one
        whose last prompt shares the longest start with ``ids`` (a conversation's next turn
        finds its cache), else the least recently used; None (llama.cpp picks) if all are busy."""
        slots = getattr(self.engine, "slots", 1)
        if slots <= 1:
            return None
        with self._cond:
            free = [i for i in range(slots - 1) if i not in self._slot_busy]
            if not free:
                return None
            slot = max(free, key=lambda i: (_common_prefix(self._slot_prompts.get(i, []), ids),
                                            -self._slot_used.get(i, 0)))
            self._slot_busy.add(slot)
            self._slot_used[slot] = time.monotonic()
            self._slot_prompts[slot] = list(ids)
            return slot

    def _release_chat_slot(self, slot: int | None) -> None:
        if slot is not None:
            with self._cond:
                self._slot_busy.discard(slot)

    def _fim_slot(self) -> int | None:
        """Code completions keep to the last slot: the next keystroke's prompt then finds the
        last one's work there, shifted if its window moved (llama.cpp picks a slot by the
        cached prompt's start, which a moved window no longer shares)."""
        slots = getattr(self.engine, "slots", 1)
        return slots - 1 if slots > 1 else None

    def _chat_streaming(self) -> bool:
        return any(not j.background for j in self._running)

    def _prefill_aside(self, job: Job, ids: list[int]) -> None:
        """Chat first on llama.cpp: feed a completion's prompt in small steps while a chat streams.

        llama.cpp puts every slot's work into one batch per step: a chat's next token and up
        to ``n_batch`` (2,048) prompt tokens of a completion, so a completion's 1,024-token
        prompt would hold the chat's token back for the whole prefill (seconds on a CPU).
        While a chat streams, the prompt goes instead as one-token requests on ever longer
        starts of it, each at most ``FIM_PREFILL_CHUNK`` tokens past what the slot is known
        to hold (the start it shares with the last completion prompt: typing changes the end
        only). After each, the chat decodes alone: at least two tokens and ``CHAT_REST_FACTOR``
        times the step's duration. The request for the answer then finds all but the last
        few tokens cached. Without a chat the steps are ``FIM_PREFILL_STEP_ALONE`` tokens and
        follow each other at once: a chat that starts meanwhile waits for one of them (in one
        piece, a completion's prompt held back a chat that started during it for seconds:
        −36% chat decode in ``bench_completion.py``). Steps start past what the slot can reuse
        (``reusable_start``), so a window that slid is still shifted, not read again.
        """
        start = reusable_start(self._fim_cached, ids)
        while not job.cancel.is_set():
            with self._cond:  # the chat's rest after the last prefill of any completion
                while (self._chat_streaming() and not job.cancel.is_set()
                       and (left := self._fim_not_before - time.monotonic()) > 0):
                    self._cond.wait(left)
                chat = self._chat_streaming()
            step = FIM_PREFILL_CHUNK if chat else FIM_PREFILL_STEP_ALONE
            if len(ids) - start <= step:
                break
            end = start + step
            self._note(("prefill", job.key, end - start))
            t0 = time.monotonic()
            self.engine.prefill(ids[:end], job.cancel, slot=self._fim_slot())
            took = time.monotonic() - t0
            self._fim_cached = ids[:end]
            start = end
            if not chat:
                continue
            with self._cond:
                self._fim_not_before = time.monotonic() + took * CHAT_REST_FACTOR
                until = self._chat_tokens + CHAT_TOKENS_BETWEEN_CHUNKS
                self._cond.wait_for(
                    lambda until=until: (self._chat_tokens >= until or job.cancel.is_set()
                                         or not self._chat_streaming()),
                    timeout=CHAT_STEP_WAIT_S)
        self._note(("run", job.key, len(ids) - start))
        if not job.cancel.is_set():  # (a cancelled one is not sent)
            self._fim_cached = list(ids)

    def _rest_after(self, usage: dict, beside_chat: bool) -> None:
        """A completion's answer ran beside a chat: its last prompt tokens went with one of the
        chat's steps and each of its tokens into the chat's batches, so the chat rests from the
        whole request as from a prompt step (``CHAT_REST_FACTOR`` times as long as it took).
        Counting the prefill alone let a typist's back-to-back completions ride in most of a
        chat's batches: -34% chat decode speed (``bench_completion.py``, chat_with_completions)."""
        with self._cond:
            if beside_chat or self._chat_streaming():
                rest = min(float(usage.get("total_s") or 0) * CHAT_REST_FACTOR, CHAT_REST_MAX_S)
                self._fim_not_before = time.monotonic() + rest

    def _note(self, event: tuple) -> None:
        if self.trace is not None:
            self.trace.append(event)

    def _run_on_own_thread(self, job: Job, prompt_ids: list[int], params: Any) -> None:
        """Run one request on an engine that generates by itself (``LlamaCppEngine.run``)."""
        def delta(text: str) -> None:
            if not job.background:
                with self._cond:
                    self._chat_tokens += 1
                    self._cond.notify_all()
            self._note(("delta", job.key))
            job.emit({"type": "delta", "id": job.key[1], "text": text})

        has_turn, t_received = False, time.monotonic()
        try:
            if job.background:
                # One completion at a time: a typist's new request cancels the last one, which
                # may be inside a prompt step llama.cpp cannot interrupt. The new one waits for
                # it to end and then finds its prompt in the slot it leaves (llama.cpp picks
                # the free slot sharing the longest start). Run side by side, every keystroke
                # would prefill the whole window in a slot of its own, all at once.
                while not (has_turn := self._fim_turn.acquire(timeout=0.05)):
                    if job.cancel.is_set():
                        break
                if not has_turn:
                    self._note(("dropped", job.key))
                    job.emit({"type": "done", "id": job.key[1], "usage": {"prompt_tokens": len(prompt_ids), "tokens": 0},
                              "finish_reason": "cancelled", "truncated": job.truncated})
                    return
                self._prefill_aside(job, prompt_ids)
            chat_slot = None if job.background else self._take_chat_slot(prompt_ids)
            chat_tokens, t_run = self._chat_tokens, time.monotonic()
            try:
                outcome = self.engine.run(prompt_ids, params, job.cancel, delta, stop_ids=self._stop_ids(job),
                                          slot=self._fim_slot() if job.background else chat_slot, heal=job.heal,
                                          dry=not job.background)
            finally:
                self._release_chat_slot(chat_slot)
            if job.background:
                self._rest_after(outcome.usage, beside_chat=self._chat_tokens != chat_tokens)
                log.debug("completion %s: waited %.3f s, prompt %d tokens (%d cached, %.3f s), %d tokens, %.3f s, %s",
                          job.key[1], t_run - t_received, outcome.usage.get("prompt_tokens", 0),
                          outcome.usage.get("cached_prompt_tokens", 0), outcome.usage.get("prefill_s") or 0,
                          outcome.usage.get("tokens", 0), time.monotonic() - t_run, outcome.finish_reason)
        except Exception as exc:  # one request's failure must not take the worker down
            log.error("Generation failed", exc_info=True)
            job.emit({"type": "error", "id": job.key[1], "message": f"Generation failed: {exc}"})
        else:
            job.emit({"type": "done", "id": job.key[1], "usage": outcome.usage,
                      "finish_reason": outcome.finish_reason, "truncated": job.truncated})
        finally:
            if has_turn:
                self._fim_turn.release()
            with self._cond:
                self._running.discard(job)
                self._cond.notify_all()  # a completion waiting for this chat's steps goes on

    def _advance(self, job: Job) -> None:
        if self.trace is not None:
            self.trace.append(("step", job.key))
        try:
            delta = job.decoder.step()
        except Exception as exc:  # one request's failure must not take the worker down
            log.error("Generation failed", exc_info=True)
            job.emit({"type": "error", "id": job.key[1], "message": f"Generation failed: {exc}"})
            self._drop(job)
            return
        self._emit_step(job, delta)

    def _advance_batch(self, jobs: list[Job]) -> None:
        if self.trace is not None:
            self.trace.append(("batch", [j.key for j in jobs]))
        try:
            deltas = self.engine.step_batch([j.decoder for j in jobs])
        except Exception:  # fall back to one at a time rather than fail every request
            log.error("Batched step failed; stepping requests one by one", exc_info=True)
            self.batch = False
            for job in jobs:
                self._advance(job)
            return
        for job, delta in zip(jobs, deltas, strict=True):
            self._emit_step(job, delta)

    def _emit_step(self, job: Job, delta: str) -> None:
        if delta:
            job.emit({"type": "delta", "id": job.key[1], "text": delta})
        if job.decoder.done:
            job.emit({"type": "done", "id": job.key[1], "usage": job.decoder.usage,
                      "finish_reason": job.decoder.finish_reason, "truncated": job.truncated})
            self._drop(job)

    def _drop(self, job: Job) -> None:
        with self._cond:
            if job in self._active:
                self._active.remove(job)
        job.decoder = None


class WorkerServer:
    """The asyncio side: connections, frames, and handing jobs to the scheduler."""

    def __init__(self, scheduler: Scheduler, secret: str | None = None, idle_timeout: float = DEFAULT_IDLE_TIMEOUT):
        self.scheduler = scheduler
        self.secret = secret
        self.idle_timeout = idle_timeout
        self.connections = 0
        self.last_activity = time.monotonic()
        self._next_conn = 0
        self.socket_inode: int | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._next_conn += 1
        conn_id = self._next_conn
        self.connections += 1
        loop = asyncio.get_running_loop()
        authed = self.secret is None

        def send(frame: dict) -> None:
            if not writer.is_closing():
                writer.write(protocol.pack(frame))

        def emit(frame: dict) -> None:  # called from the scheduler thread
            loop.call_soon_threadsafe(send, frame)

        try:
            while True:
                try:
                    frame = await protocol.read_frame(reader)
                except ProtocolError as exc:
                    send({"type": "error", "id": None, "message": str(exc)})
                    if exc.fatal:
                        break
                    continue
                if frame is None:
                    break
                self.last_activity = time.monotonic()
                kind, req_id = frame["type"], frame.get("id")
                if not authed:
                    if kind == "hello" and protocol.secrets_match(frame.get("secret"), self.secret or ""):
                        authed = True
                        send({"type": "hello", "version": protocol.PROTOCOL_VERSION, **self.scheduler.info})
                        continue
                    send({"type": "error", "id": req_id, "message": "Authentication failed: the first frame must be hello with the shared secret."})
                    break
                if kind == "hello":
                    send({"type": "hello", "version": protocol.PROTOCOL_VERSION, **self.scheduler.info})
                elif kind == "info":
                    send({"type": "info", "id": req_id, **self.scheduler.info, "load_error": self.scheduler.load_error})
                elif kind == "generate":
                    if not self.scheduler.ready.is_set():
                        send({"type": "progress", "id": req_id, "message": f"Loading model {self.scheduler.spec}"})
                    self.scheduler.submit(Job((conn_id, req_id), frame, emit))
                elif kind == "cancel":
                    self.scheduler.cancel((conn_id, req_id))
                else:
                    send({"type": "error", "id": req_id, "message": f"Unknown frame type {kind!r}."})
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.scheduler.cancel_connection(conn_id)
            self.connections -= 1
            self.last_activity = time.monotonic()
            writer.close()

    async def watch(self, socket_file: Path | None) -> None:
        """Exit when idle too long, or when our socket file is gone or replaced."""
        inode = self.socket_inode = socket_file.stat().st_ino if socket_file else None
        while True:
            await asyncio.sleep(1.0)
            if socket_file is not None:
                try:
                    if socket_file.stat().st_ino != inode:
                        log.info("Socket %s was replaced; exiting", socket_file)
                        return
                except FileNotFoundError:
                    log.info("Socket %s was removed; exiting", socket_file)
                    return
            idle = time.monotonic() - self.last_activity
            if self.scheduler.load_error and self.connections == 0 and idle > LOAD_ERROR_LINGER_S:
                # Nothing to serve: whoever waited was told why; a later client starts a new
                # worker and is told again.
                log.info("The model could not be loaded and no client is connected; exiting")
                return
            if self.connections == 0 and not self.scheduler.busy and idle > self.idle_timeout:
                log.info("Idle for %.0f s; exiting", idle)
                return


def _exit_now(*_: Any) -> None:
    os._exit(0)


async def _restore_signals(scheduler: Scheduler) -> None:
    """Take SIGTERM/SIGINT back once the model is loaded: llama.cpp installs handlers of its
    own that stop only its loop, which would leave the worker running without a model."""
    await asyncio.to_thread(scheduler.ready.wait)
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)


async def serve(spec: str, socket_file: Path | None, tcp: str | None, secret: str | None,
                idle_timeout: float, batch: bool = DEFAULT_BATCH) -> None:
    scheduler = Scheduler(spec, batch=batch)
    server = WorkerServer(scheduler, secret if tcp else None, idle_timeout)
    if tcp:
        host, port = protocol.parse_hostport(tcp)
        srv = await asyncio.start_server(server.handle, host, port)
        watched = None
    else:
        assert socket_file is not None
        old_umask = os.umask(0o177)  # the socket is created 0600
        try:
            if socket_file.exists():
                socket_file.unlink()
            with unix_address(socket_file) as address:
                srv = await asyncio.start_unix_server(server.handle, address)
        finally:
            os.umask(old_umask)
        watched = socket_file
    scheduler.start()
    log.info("Worker for %s listening on %s (pid %d)", spec, tcp or socket_file, os.getpid())
    async with srv:
        restore = asyncio.ensure_future(_restore_signals(scheduler))
        await server.watch(watched)
        restore.cancel()
    if watched is not None and server.socket_inode is not None:
        try:  # remove the socket only if it is still ours
            if watched.stat().st_ino == server.socket_inode:
                watched.unlink()
        except FileNotFoundError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="starchat worker", description="Run the shared model worker.")
    parser.add_argument("--model", default="default", help="model spec: default, a folder, a .gguf file or an HF id")
    parser.add_argument("--socket", help="Unix socket path (default: one per model in the runtime dir)")
    parser.add_argument("--tcp", help="listen on HOST:PORT instead (needs STARCHAT_WORKER_SECRET)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --tcp address")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, help="exit after this many idle seconds")
    parser.add_argument("--no-batch", action="store_true", help="step concurrent requests one by one instead of batching them")
    parser.add_argument("--log-level", default=os.environ.get("STARCHAT_WORKER_LOG_LEVEL", "INFO"),
                        help="DEBUG also logs each code completion's timings (env STARCHAT_WORKER_LOG_LEVEL: "
                             "for a worker a client starts)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from ..runtime.loading import ModelSpecError, resolve_spec
    from ..runtime.model_files import ModelFileError, preflight

    try:
        source = resolve_spec(args.model)
        preflight(source.kind, source.location)  # a bad file ends us here, before any client waits
    except (ModelSpecError, ModelFileError) as exc:
        print(f"{protocol.WORKER_REFUSAL}{exc}", file=sys.stderr)  # noqa: T201
        return 2
    secret = os.environ.get("STARCHAT_WORKER_SECRET")
    if args.tcp:
        try:
            host, _ = protocol.parse_hostport(args.tcp)
        except ValueError as exc:
            print(f"starchat worker: {exc}", file=sys.stderr)  # noqa: T201
            return 2
        if not secret:
            print("starchat worker: --tcp needs a shared secret in STARCHAT_WORKER_SECRET.", file=sys.stderr)  # noqa: T201
            return 2
        if not protocol.is_loopback(host) and not args.allow_remote:
            print(f"starchat worker: {host} is not loopback; pass --allow-remote to listen there.", file=sys.stderr)  # noqa: T201
            return 2
    socket_file = Path(args.socket) if args.socket else protocol.socket_path_for(args.model)
    signal.signal(signal.SIGTERM, _exit_now)
    asyncio.run(serve(args.model, socket_file, args.tcp, secret, args.idle_timeout,
                      batch=DEFAULT_BATCH and not args.no_batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
