"""``max_minutes`` fits an adapter's training to the time it has (``training.repo.fit``).

A slow machine is simulated by a fake clock (the only fake here: it stands in for steps that
take seconds); the steps, schedule and Trainer are real.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.servers import free_port
from tests.training import stop_steps
from tests.training.stop_steps import Clock
from training.repo import fit

ROOT = Path(__file__).resolve().parents[2]

CONFIG = fit.__file__.replace("repo/fit.py", "configs/adapt_cpu.yaml")


def cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def run_steps(monkeypatch, max_minutes: float, per_step: list[float], planned: int = 100):
    """The stop control over ``planned`` steps of ``per_step[i]`` seconds each (``stop_steps``);
    returns (the stop control, the Trainer state, the learning rates)."""
    clock = Clock()
    monkeypatch.setattr(fit, "time", clock.as_module())
    stop = fit._StopControl(max_minutes)
    state, rates = stop_steps.run_steps(stop, clock, per_step, planned)
    return stop, state, rates


def test_a_run_that_does_not_fit_ends_early_with_its_whole_schedule(monkeypatch):
    stop, state, rates = run_steps(monkeypatch, max_minutes=5, per_step=[10.0])
    # timed over steps 2-4 (10 s each); at 52 s, 0.95 x 248 s left fits 23 more steps
    assert stop.fitted == (100, 27, 10.0) and state.max_steps == 27 and len(rates) == 27
    assert stop.reason is None  # ended by its schedule, not cut by the limit
    assert rates[10] == pytest.approx(cosine(11, 4, 27))  # the rate of step 12, on the 27-step cosine
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)  # decayed to its end
    assert all(a >= b for a, b in zip(rates[4:], rates[5:], strict=False))


def test_a_run_that_fits_is_left_alone(monkeypatch):
    stop, state, rates = run_steps(monkeypatch, max_minutes=30, per_step=[10.0])
    assert stop.fitted is None and state.max_steps == 100 and len(rates) == 100
    assert rates[50] == pytest.approx(cosine(51, 4, 100))


def test_steps_that_slow_down_later_are_still_stopped_by_the_limit(monkeypatch):
    stop, state, rates = run_steps(monkeypatch, max_minutes=5, per_step=[10.0] * 6 + [40.0])
    assert state.max_steps == 27  # fitted at 10 s a step ...
    assert stop.reason == "the time limit" and len(rates) < 27  # ... then cut when the steps took 40


def test_fit_trains_the_fitted_steps(monkeypatch, tiny_models, tmp_path, caplog):
    """Through the real Trainer, a shortened run stops at its new last step. The fake clock
    moves 5 s at each reading: readings at the start (5, 10 s), two a step while the steps are
    timed (steps 1-4 end at 20 ... 50 s: 10 s a step), one a step after; the limit at 185 s."""
    clock = Clock()

    def monotonic() -> float:
        clock.now += 5.0
        return clock.now

    monkeypatch.setattr(fit, "time", SimpleNamespace(monotonic=monotonic))
    refits, refit = [], fit.refit_schedule
    monkeypatch.setattr(fit, "refit_schedule", lambda scheduler, steps: refits.append((steps, refit(scheduler, steps))))
    examples = [{"input_ids": list(range(1, 33)), "labels": list(range(1, 33))} for _ in range(64)]
    with caplog.at_level("WARNING", logger="training.repo.fit"):
        result = fit.fit(str(tiny_models.folder("llama")), examples, tmp_path, [
            CONFIG, "--max_steps", "60", "--max_seq_length", "64", "--per_device_train_batch_size", "1",
            "--logging_steps", "1", "--save_strategy", "no"], max_minutes=3)
    # at 45 s, 0.95 x 140 s left fits 13 more steps of 10 s
    assert "17 of the 60 steps fit in the time limit" in caplog.text
    assert refits == [(17, True)]  # the Trainer's own schedule re-aimed
    assert result.steps == 17 and "The time limit ended training" not in caplog.text
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_two_ranks_stop_at_the_same_step():
    """Under torch.distributed (two real gloo ranks) the ranks agree: the fewest steps that fit
    on any rank, and a stop on one rank stops all at the same step (else the others would
    wait for it in a collective)."""
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    ranks = [subprocess.Popen([sys.executable, str(Path(__file__).with_name("fit_ranks.py"))],
                              env={**env, "RANK": str(rank)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for rank in (0, 1)]
    try:
        outs = [rank.communicate(timeout=120) for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    assert [rank.returncode for rank in ranks] == [0, 0], [err[-2000:] for _, err in outs]
    (time0, signal0), (time1, signal1) = ([json.loads(line) for line in out.strip().splitlines()[-2:]]
                                          for out, _ in outs)
    # rank 1 (20 s a step): at 92 s, 0.95 x 208 s left fits 9 more steps; rank 0 alone would fit 27
    assert time0["max_steps"] == time1["max_steps"] == 13 and time0["step"] == time1["step"] == 13
    assert time0["reason"] is None and time1["reason"] is None
    assert time0["lr"] == pytest.approx(0.0, abs=1e-12) == time1["lr"]  # both schedules re-aimed at step 13
    assert signal0["step"] == signal1["step"] == 6 and signal0["max_steps"] == 100
    assert signal1["reason"] == "Ctrl-C" and signal0["reason"] == "a signal to another rank"
