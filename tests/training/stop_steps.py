"""The step loop the stop-control tests drive (``test_fit_time.py`` in the test process,
``fit_ranks.py`` in each rank's): the steps of a real cosine schedule (4 warm-up steps) under
``training.repo.fit._StopControl`` and its real Trainer callback, timed by a fake clock (the
only fake: it stands in for steps that take seconds)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch
from transformers import TrainerControl, TrainerState, get_cosine_schedule_with_warmup

from training.repo import fit


class Clock:
    """Seconds that pass only when told to (a machine whose steps take ``per_step`` seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def as_module(self) -> SimpleNamespace:
        """What stands in for ``fit.time``."""
        return SimpleNamespace(monotonic=self.monotonic)


def run_steps(stop: fit._StopControl, clock: Clock, per_step: list[float], planned: int = 100,
              before_step_end: Callable[[int], None] | None = None) -> tuple[TrainerState, list[float]]:
    """Runs up to ``planned`` steps, the clock moving ``per_step[i]`` seconds in step i (the
    last value for every later step) and ``before_step_end(step)`` called before the callback;
    returns the Trainer state and the learning rate after each step."""
    callback = stop.callback()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, 4, planned)
    state, control = TrainerState(max_steps=planned), TrainerControl()
    clock.now = 12.0  # loading before the first step
    rates = []
    for step in range(1, planned + 1):
        optimizer.step()
        scheduler.step()
        state.global_step = step
        clock.now += per_step[min(step, len(per_step)) - 1]
        if before_step_end is not None:
            before_step_end(step)
        callback.on_step_end(None, state, control, lr_scheduler=scheduler)
        rates.append(optimizer.param_groups[0]["lr"])
        if control.should_training_stop or step >= state.max_steps:
            break
    return state, rates
