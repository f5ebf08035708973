"""What every scheduler shares: the job, prompt building, and the thread that loads the model
and starts jobs; one subclass per engine path (``stepping`` for torch, ``threaded`` for
llama.cpp) says how a started job runs.

The interface the worker uses: ``submit(job)``, ``cancel(key)``, ``cancel_connection(conn_id)``,
``busy``, ``ready`` (set once the model is loaded or failed), ``load_error``, ``info`` (the
``hello`` frame's model fields) and ``start()`` (a daemon thread). A job ends with exactly
one ``done`` or ``error`` frame, whatever fails on the way (prompt building, the engine, a
scheduling round: ``_round_failed`` ends the jobs it drove); the scheduler thread goes on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ...runtime.spec import ModelSpec

log = logging.getLogger("starchat.worker")


@dataclass(eq=False)  # hashed by identity: a request is itself
class Job:
    key: tuple[int, Any]
    request: dict
    emit: Callable[[dict], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    decoder: Any = None
    truncated: list[str] = field(default_factory=list)
    heal: str = ""  # a completion's healed prefix token (model.prompt.fim)
    params: Any = None  # its GenerationParams, once its prompt is built

    @property
    def background(self) -> bool:
        """Code completions wait for chat: they run only between chat steps."""
        return "fim" in self.request

    def fail(self, message: str) -> None:
        self.emit({"type": "error", "id": self.key[1], "message": message})


def build_prompt(engine: Any, request: dict) -> tuple[list[int], list[str], Any, str]:
    """Validate a generate request and fit it into the context window: (prompt ids, what was
    cut, the generation params, the text the answer must start with and hide).

    A chat request has ``messages`` (or ``system``/``history``/``user_parts``); a code
    completion has ``fim`` (``model.prompt.fim``, which may heal the prefix's last token).
    Every engine consumes the ids made here.
    """
    from ...prompt.budget import fit_request
    from ...prompt.params import GenerationParams

    params = GenerationParams.from_dict(request.get("params"))
    if "fim" in request and "adapter_scale" not in (request.get("params") or {}):
        # a completion that does not say applies the adapter's own completion scale
        params = replace(params, adapter_scale=getattr(engine, "completion_adapter_scale", 1.0))
    limit = engine.context_window - params.max_new_tokens
    if limit < 16:
        raise ValueError(
            f"max_new_tokens ({params.max_new_tokens}) leaves no room for the prompt in a "
            f"{engine.context_window}-token context window."
        )
    if "fim" in request:
        from ...prompt.fim import build_fim_prompt

        fim = build_fim_prompt(engine.tokenizer, request["fim"], limit)
        return fim.ids, fim.truncated, params, fim.heal
    fitted = fit_request(engine.chat_format, limit, request)
    return fitted.prompt_ids, fitted.truncated, params, ""


class Scheduler(threading.Thread):
    """Loads the model on its own thread, then starts each submitted job on the engine.

    Subclasses give ``kind``, ``_load(spec) -> info`` (setting ``self.engine``),
    ``_launch(job, prompt_ids, params)`` (the job now runs: it must end with one frame),
    ``_live()`` (jobs launched and not ended) and, where jobs need the thread's turns,
    ``_has_work()`` and ``_round()``.
    """

    kind = ""

    def __init__(self, spec: ModelSpec):
        super().__init__(name="starchat-model", daemon=True)
        self.spec = spec
        self.engine: Any = None
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.info: dict = {"spec": str(spec), "ready": False, "pid": os.getpid()}
        self._cond = threading.Condition()
        self._pending: list[Job] = []
        self._starting: list[Job] = []  # taken from _pending, not yet launched
        self._fim_stop_ids: list[int] | None = None  # model.prompt.fim.stop_token_ids, once
        #: When a list, the scheduler appends its steps (tests); see the subclasses.
        self.trace: list | None = None

    # --- the interface ------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._cond:
            if self.load_error:
                job.fail(self.load_error)
                return
            self._pending.append(job)
            self._cond.notify()

    def cancel(self, key: tuple[int, Any]) -> None:
        self._cancel_where(lambda job: job.key == key)

    def cancel_connection(self, conn_id: int) -> None:
        self._cancel_where(lambda job: job.key[0] == conn_id)

    @property
    def busy(self) -> bool:
        with self._cond:
            return bool(self._pending or self._starting or self._live())

    # --- for the subclasses -------------------------------------------------------------

    def _load(self, spec: ModelSpec) -> dict:
        raise NotImplementedError

    def _launch(self, job: Job, prompt_ids: list[int], params: Any) -> None:
        raise NotImplementedError

    def _live(self) -> list[Job]:
        raise NotImplementedError

    def _has_work(self) -> bool:
        """Whether ``_round`` has something to do (called holding ``_cond``)."""
        return False

    def _round(self) -> None:
        """One turn of the thread's own work between job starts."""

    def _round_failed(self, message: str) -> None:
        """``_round`` raised: end the jobs it was driving with ``message`` (none by default)."""

    def _note(self, event: tuple) -> None:
        if self.trace is not None:
            self.trace.append(event)

    def _stop_ids(self, job: Job) -> list[int]:
        """A code completion ends at any FIM family's end or sentinel token (``model.prompt.fim``)."""
        if not job.background:
            return []
        if self._fim_stop_ids is None:
            from ...prompt.fim import stop_token_ids

            self._fim_stop_ids = stop_token_ids(self.engine.tokenizer)
        return self._fim_stop_ids

    # --- the thread ---------------------------------------------------------------------

    def _cancel_where(self, matches: Callable[[Job], bool]) -> None:
        with self._cond:
            for job in [*self._pending, *self._starting, *self._live()]:
                if matches(job):
                    job.cancel.set()
            self._cond.notify_all()  # a job waiting on the scheduler (a completion's rest) stops now

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            info = self._load(self.spec)
        except Exception as exc:
            log.error("Could not load model %s", self.spec, exc_info=True)
            with self._cond:
                self.load_error = f"The model worker could not load {str(self.spec)!r}: {exc}"
                waiting, self._pending = self._pending, []
            for job in waiting:
                job.fail(self.load_error)
            self.ready.set()
            return
        from ...prompt.fim import detect_template

        self.info = {**info, "spec": str(self.spec), "ready": True, "engine": self.kind,
                     "adapter": self.spec.adapter,
                     # what completions that set no adapter_scale apply (the adapter file's own)
                     "adapter_completion_scale": (getattr(self.engine, "completion_adapter_scale", 1.0)
                                                  if self.spec.adapter else None),
                     "fim": detect_template(self.engine.tokenizer) if hasattr(self.engine, "tokenizer") else "none",
                     "load_s": round(time.perf_counter() - t0, 3), "pid": os.getpid()}
        log.info("Model %s ready on %s (%s) in %.1f s", self.info["model"], self.info["device"],
                 self.kind, self.info["load_s"])
        self.ready.set()
        while True:
            with self._cond:
                while not self._pending and not self._has_work():
                    self._cond.wait()
                new, self._pending = self._pending, []
                self._starting = new  # still reachable by cancel() while its prompt is built
            for job in new:
                self._start(job)
            with self._cond:
                self._starting = []
            try:
                self._round()
            except Exception as exc:  # a defect in one round must not stop the scheduler
                log.error("A scheduling round failed", exc_info=True)
                self._round_failed(f"The model worker failed on this request: {type(exc).__name__}: {exc}")

    def _start(self, job: Job) -> None:
        """Build the job's prompt and launch it; any failure ends this job alone, with one
        sentence (a chat template that raises, a tokenizer that breaks): the scheduler goes on."""
        try:
            prompt_ids, job.truncated, params, job.heal = build_prompt(self.engine, job.request)
            job.params = params
            self._launch(job, prompt_ids, params)
        except ValueError as exc:  # the request's own fault, said in a sentence
            job.fail(str(exc))
        except Exception as exc:
            log.error("Could not start request %r", job.key[1], exc_info=True)
            job.fail(f"The request could not be started: {type(exc).__name__}: {exc}")
