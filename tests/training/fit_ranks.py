"""One rank of a two-rank run of the stop control (``training.repo.fit._StopControl``) over
real torch.distributed (gloo), for ``test_fit_time.py``: each rank runs the steps of a real
cosine schedule on its own fake clock (the only fake: it stands in for steps that take
seconds, slower on rank 1) and prints one JSON line with where it stopped.

Two runs, one JSON line each: "time" (rank 0 takes 10 s a step, rank 1 20 s; a 5-minute
limit), then "signal" (no pressure from the limit; rank 1 alone gets Ctrl-C after step 6).
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT come from the environment, as torchrun sets them.)
"""

from __future__ import annotations

import json
import signal
from types import SimpleNamespace

import torch
import torch.distributed as dist
from transformers import TrainerControl, TrainerState, get_cosine_schedule_with_warmup

from training.repo import fit


def run(mode: str, rank: int) -> None:
    now = [0.0]
    fit.time = SimpleNamespace(monotonic=lambda: now[0])
    stop = fit._StopControl(5 if mode == "time" else 600)
    callback = stop.callback()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, 4, 100)
    state, control = TrainerState(max_steps=100), TrainerControl()
    now[0] = 12.0
    step = 0
    for step in range(1, 101):
        optimizer.step()
        scheduler.step()
        state.global_step = step
        now[0] += 10.0 * (rank + 1)
        if mode == "signal" and rank == 1 and step == 6:
            stop._on_signal(signal.SIGINT, None)
        callback.on_step_end(None, state, control, lr_scheduler=scheduler)
        if control.should_training_stop or step >= state.max_steps:
            break
    print(json.dumps({"mode": mode, "rank": rank, "max_steps": state.max_steps, "step": step,
                      "reason": stop.reason, "lr": optimizer.param_groups[0]["lr"]}), flush=True)


if __name__ == "__main__":
    dist.init_process_group("gloo")
    for mode in ("time", "signal"):
        run(mode, dist.get_rank())
    dist.destroy_process_group()
