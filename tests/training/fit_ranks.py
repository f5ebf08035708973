"""One rank of a two-rank run of the stop control (``training.repo.fit._StopControl``) over
real torch.distributed (gloo), for ``test_fit_time.py``: each rank runs the steps of a real
cosine schedule on its own fake clock (``stop_steps.py``; slower on rank 1) and prints one JSON
line with where it stopped.

Two runs, one JSON line each: "time" (rank 0 takes 10 s a step, rank 1 20 s; a 5-minute
limit), then "signal" (no pressure from the limit; rank 1 alone gets Ctrl-C after step 6).
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT come from the environment, as torchrun sets them.)
"""

from __future__ import annotations

import json
import signal

import torch.distributed as dist

from tests.training.stop_steps import Clock, run_steps
from training.repo import fit


def run(mode: str, rank: int) -> None:
    clock = Clock()
    fit.time = clock.as_module()
    stop = fit._StopControl(5 if mode == "time" else 600)

    def signal_rank_1(step: int) -> None:
        if mode == "signal" and rank == 1 and step == 6:
            stop._on_signal(signal.SIGINT, None)

    state, rates = run_steps(stop, clock, [10.0 * (rank + 1)], before_step_end=signal_rank_1)
    print(json.dumps({"mode": mode, "rank": rank, "max_steps": state.max_steps, "step": state.global_step,
                      "reason": stop.reason, "lr": rates[-1]}), flush=True)


if __name__ == "__main__":
    dist.init_process_group("gloo")
    for mode in ("time", "signal"):
        run(mode, dist.get_rank())
    dist.destroy_process_group()
