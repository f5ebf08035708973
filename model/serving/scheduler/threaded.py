"""The llama.cpp engine's scheduler: the scheduler thread builds each request's prompt ids
and hands the request to a thread of its own; llama.cpp's slots batch the concurrent ones.

Chat first: chats keep off the last slot, which code completions use one at a time (a
typist's next request finds the last one's work there), and a completion's prompt goes in
small steps while a chat streams (``_prefill_aside``, paced by ``Pacing``).

``trace`` (a list, for tests) gets ("delta", key) per delta, ("prefill", key, new tokens)
per prompt step of a completion, ("run", key, new tokens) when its request for the answer
is sent, and ("dropped", key) for a completion cancelled before its turn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ...runtime.spec import ModelSpec
from .base import Job, Scheduler, log
from .pacing import Clock, Pacing, common_prefix, reusable_start


class LlamaCppScheduler(Scheduler):
    """Runs every request on a thread of its own (``LlamaCppEngine.run``)."""

    kind = "llama.cpp"

    def __init__(self, spec: ModelSpec, pacing: Pacing | None = None, clock: Clock | None = None,
                 load: Callable[[ModelSpec], Any] | None = None):
        """``load``: spec -> a ready engine (default: ``model.runtime.llamacpp_engine.load``
        on the spec's file; tests give a scripted one)."""
        super().__init__(spec)
        self.pacing = pacing or Pacing()
        self.clock = clock or Clock()
        self._load_engine = load
        self._running: set[Job] = set()
        self._chat_tokens = 0  # deltas of chat requests, for _prefill_aside
        self._fim_cached: list[int] = []  # the last completion prompt llama.cpp processed
        self._fim_not_before = 0.0  # clock time before which no completion prefill starts
        # Slots: chats keep off the last one, which code completions use, one at a time
        # (see _run_on_own_thread, _take_chat_slot, _fim_slot).
        self._slot_busy: set[int] = set()
        self._slot_used: dict[int, float] = {}
        self._slot_prompts: dict[int, list[int]] = {}
        self._fim_turn = threading.Lock()

    def _load(self, spec: ModelSpec) -> dict:
        if self._load_engine is not None:
            self.engine = self._load_engine(spec)
            name = getattr(self.engine, "model_name", spec.display_name)
        else:
            from ...runtime import llamacpp_engine
            from ...runtime.spec import adapter_completion_scale

            self.engine = llamacpp_engine.load(
                spec.location, spec.display_name, adapter=spec.adapter,
                completion_adapter_scale=adapter_completion_scale(spec.adapter) if spec.adapter else 1.0)
            name = spec.display_name
        return {"model": name, "device": "cpu", "context_window": self.engine.context_window,
                "chat_format": self.engine.chat_format.kind, "runner": "llama.cpp", "quantize": "gguf",
                "slots": self.engine.slots}

    def _live(self) -> list[Job]:
        return list(self._running)

    def _launch(self, job: Job, prompt_ids: list[int], params: Any) -> None:
        thread = threading.Thread(target=self._run_on_own_thread, args=(job, prompt_ids, params),
                                  name=f"starchat-request-{job.key[1]}", daemon=True)
        with self._cond:
            self._running.add(job)
        try:
            thread.start()
        except BaseException:
            with self._cond:
                self._running.discard(job)
            raise

    # --- slots --------------------------------------------------------------------------

    def _take_chat_slot(self, ids: list[int]) -> int | None:
        """A chat's slot, never the completions' one: of the free others, the one whose last
        prompt shares the longest start with ``ids`` (a conversation's next turn finds its
        cache), else the least recently used; None (llama.cpp picks) if all are busy."""
        slots = getattr(self.engine, "slots", 1)
        if slots <= 1:
            return None
        with self._cond:
            free = [i for i in range(slots - 1) if i not in self._slot_busy]
            if not free:
                return None
            slot = max(free, key=lambda i: (common_prefix(self._slot_prompts.get(i, []), ids),
                                            -self._slot_used.get(i, 0)))
            self._slot_busy.add(slot)
            self._slot_used[slot] = self.clock.now()
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

    # --- chat first ---------------------------------------------------------------------

    def _chat_streaming(self) -> bool:
        return any(not j.background for j in self._running)

    def _wait(self, done: Callable[[], bool], deadline: float) -> None:
        """Wait (holding ``_cond``) until ``done()`` or the clock reaches ``deadline``."""
        while not done():
            left = deadline - self.clock.now()
            if left <= 0:
                return
            self.clock.wait(self._cond, left)

    def _prefill_aside(self, job: Job, ids: list[int]) -> None:
        """Feed a completion's prompt in small steps while a chat streams.

        llama.cpp puts every slot's work into one batch per step: a chat's next token and up
        to ``n_batch`` prompt tokens of a completion, so a completion's 1,024-token prompt
        would hold the chat's token back for the whole prefill (seconds on a CPU). While a
        chat streams, the prompt goes instead as one-token requests on ever longer starts of
        it, each at most ``pacing.prefill_chunk`` tokens past what the slot is known to hold
        (the start it shares with the last completion prompt: typing changes the end only).
        After each, the chat decodes alone: at least ``chat_tokens_between_chunks`` tokens and
        ``chat_rest_factor`` times the step's duration. The request for the answer then finds
        all but the last few tokens cached. Without a chat the steps are
        ``prefill_step_alone`` tokens and follow each other at once: a chat that starts
        meanwhile waits for one of them (in one piece, a completion's prompt held back a chat
        that started during it for seconds: −36% chat decode in ``bench_completion.py``).
        Steps start past what the slot can reuse (``reusable_start``), so a window that slid
        is still shifted, not read again.
        """
        p = self.pacing
        start = reusable_start(self._fim_cached, ids)
        while not job.cancel.is_set():
            with self._cond:  # the chat's rest after the last prefill of any completion
                # (only the completion holding the turn, this one, moves _fim_not_before)
                self._wait(lambda: not self._chat_streaming() or job.cancel.is_set(), self._fim_not_before)
                chat = self._chat_streaming()
            step = p.prefill_chunk if chat else p.prefill_step_alone
            if len(ids) - start <= step:
                break
            end = start + step
            self._note(("prefill", job.key, end - start))
            t0 = self.clock.now()
            self.engine.prefill(ids[:end], job.cancel, slot=self._fim_slot(), params=job.params)
            took = self.clock.now() - t0
            self._fim_cached = ids[:end]
            start = end
            if not chat:
                continue
            with self._cond:
                now = self.clock.now()
                self._fim_not_before = now + took * p.chat_rest_factor
                until = self._chat_tokens + p.chat_tokens_between_chunks

                def chat_stepped(until: int = until) -> bool:
                    return self._chat_tokens >= until or job.cancel.is_set() or not self._chat_streaming()

                self._wait(chat_stepped, now + p.chat_step_wait_s)
        self._note(("run", job.key, len(ids) - start))
        if not job.cancel.is_set():  # (a cancelled one is not sent)
            self._fim_cached = list(ids)

    def _rest_after(self, usage: dict, beside_chat: bool) -> None:
        """A completion's answer ran beside a chat: its last prompt tokens went with one of the
        chat's steps and each of its tokens into the chat's batches, so the chat rests from the
        whole request as from a prompt step (``chat_rest_factor`` times as long as it took).
        Counting the prefill alone let a typist's back-to-back completions ride in most of a
        chat's batches: -34% chat decode speed (``bench_completion.py``, chat_with_completions)."""
        with self._cond:
            if beside_chat or self._chat_streaming():
                rest = min(float(usage.get("total_s") or 0) * self.pacing.chat_rest_factor,
                           self.pacing.chat_rest_max_s)
                self._fim_not_before = self.clock.now() + rest

    # --- one request ----------------------------------------------------------------------

    def _run_on_own_thread(self, job: Job, prompt_ids: list[int], params: Any) -> None:
        """Run one request on the engine, which generates by itself (``LlamaCppEngine.run``)."""
        def delta(text: str) -> None:
            self._note(("delta", job.key))  # (before a completion waiting for it can go on)
            if not job.background:
                with self._cond:
                    self._chat_tokens += 1
                    self._cond.notify_all()
            job.emit({"type": "delta", "id": job.key[1], "text": text})

        has_turn, t_received = False, self.clock.now()
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
            chat_tokens, t_run = self._chat_tokens, self.clock.now()
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
                          outcome.usage.get("tokens", 0), self.clock.now() - t_run, outcome.finish_reason)
        except Exception as exc:  # one request's failure must not take the worker down
            log.error("Generation failed", exc_info=True)
            job.fail(f"Generation failed: {exc}")
        else:
            job.emit({"type": "done", "id": job.key[1], "usage": outcome.usage,
                      "finish_reason": outcome.finish_reason, "truncated": job.truncated})
        finally:
            if has_turn:
                self._fim_turn.release()
            with self._cond:
                self._running.discard(job)
                self._cond.notify_all()  # a completion waiting for this chat's steps goes on
