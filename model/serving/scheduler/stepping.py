"""The torch engine's scheduler: one thread owns the model and advances every active request
one token per turn.

Requests past their prefill share one batched forward pass (``Engine.step_batch``;
``batch=False`` steps them round robin), so concurrent clients stream at the same time and
a short request is never stuck behind a long one; chat goes first (``plan_round``).
``cancel`` stops a request before its next decode step. ``trace`` (a list, for tests)
gets ("step", key) or ("batch", [keys]) per forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...runtime.spec import ModelSpec
from .base import Job, Scheduler, log


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


class TorchScheduler(Scheduler):
    """Steps every active request on the scheduler thread (``model.runtime.engine``)."""

    kind = "torch"

    def __init__(self, spec: ModelSpec, load: Callable[[ModelSpec], Any] | None = None, batch: bool = True):
        """``load``: spec -> ``LoadedModel`` (default ``model.runtime.loading.load_model``)."""
        super().__init__(spec)
        self.batch = batch
        self._load_model = load
        self._active: list[Job] = []
        self._turn = 0

    def _load(self, spec: ModelSpec) -> dict:
        from ...runtime.engine import Engine
        from ...runtime.loading import load_model

        loaded = (self._load_model or load_model)(spec)
        self.engine = Engine(loaded)
        return {"model": loaded.name, "device": loaded.device, "context_window": loaded.context_window,
                "chat_format": self.engine.chat_format.kind, "runner": loaded.runner_kind,
                "quantize": loaded.quantize}

    def _live(self) -> list[Job]:
        return self._active

    def _has_work(self) -> bool:
        return bool(self._active)

    def _launch(self, job: Job, prompt_ids: list[int], params: Any) -> None:
        job.decoder = self.engine.decoder(prompt_ids, params, job.cancel, stop_ids=self._stop_ids(job),
                                          heal=job.heal, dry=False if job.background else None)
        with self._cond:
            self._active.append(job)

    def _round(self) -> None:
        self._turn += 1
        first, together, last = plan_round(list(self._active), self.batch, self._turn)
        for job in first:
            self._advance(job)
        if together:
            self._advance_batch(together)
        for job in last:
            self._advance(job)

    def _round_failed(self, message: str) -> None:
        for job in list(self._active):  # their decoders may be half-stepped: end them, go on
            job.fail(message)
            self._drop(job)

    def _advance(self, job: Job) -> None:
        self._note(("step", job.key))
        try:
            delta = job.decoder.step()
        except Exception as exc:  # one request's failure must not take the worker down
            log.error("Generation failed", exc_info=True)
            job.fail(f"Generation failed: {exc}")
            self._drop(job)
            return
        self._emit_step(job, delta)

    def _advance_batch(self, jobs: list[Job]) -> None:
        self._note(("batch", [j.key for j in jobs]))
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
