"""The worker's schedulers: one per engine path behind one interface (``base.Scheduler``).

- ``LlamaCppScheduler`` (``threaded``): GGUF files on llama.cpp; each request on a thread of
  its own, chat first by slots and by pacing a completion's prompt (``pacing.Pacing``).
- ``TorchScheduler`` (``stepping``): everything else on the torch engine; one thread steps
  every request a token per turn, batched (``plan_round``).

``scheduler_for(spec)`` picks the one that serves a spec (``ModelSpec.engine``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...runtime.spec import ModelSpec
from .base import Job, Scheduler, build_prompt
from .pacing import Clock, Pacing, reusable_start
from .stepping import TorchScheduler, plan_round
from .threaded import LlamaCppScheduler

__all__ = ["Clock", "Job", "LlamaCppScheduler", "Pacing", "Scheduler", "TorchScheduler", "build_prompt",
           "plan_round", "reusable_start", "scheduler_for"]


def scheduler_for(spec: ModelSpec, batch: bool = True, pacing: Pacing | None = None,
                  load: Callable[[ModelSpec], Any] | None = None) -> Scheduler:
    """The scheduler for the engine that serves ``spec``; ``load`` (spec -> ``LoadedModel``)
    means torch. A spec that names nothing loadable gets the torch one, whose load then
    fails and answers every request with the error."""
    if load is None:
        try:
            kind = spec.engine()
        except Exception:
            kind = "torch"
        if kind == "llama.cpp":
            return LlamaCppScheduler(spec, pacing=pacing)
    return TorchScheduler(spec, load=load, batch=batch)
