"""Is the machine busy (``model.runtime.cpu_watch``)? On scripted /proc readings (a test
cannot load the cores on demand, and a suite runs beside other work), and our sibling workers
found on the real /proc: a real worker of the embedded model."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from model.runtime.cpu_watch import (
    CpuWatch,
    SiblingWorkers,
    find_workers,
    read_started,
    running_threads,
)
from model.runtime.spec import ModelSpec
from model.serving.client import WorkerClient

from .conftest import kill_workers


def test_cpu_watch_counts_other_processes_only():
    """/proc readings scripted: the machine's busy seconds and this process's, a sample each 0.5 s."""
    now, total, own = [0.0], [100.0], [10.0]
    watch = CpuWatch(busy_cores=0.75, quiet_cores=0.3, busy_window_s=2.0, quiet_window_s=4.0,
                     read_total=lambda: total[0], read_self=lambda: own[0], clock=lambda: now[0],
                     read_siblings=lambda fresh=False: {})

    def tick(others: float, ours: float, n: int = 1) -> None:
        for _ in range(n):
            now[0] += 0.5
            total[0] += 0.5 * (others + ours)
            own[0] += 0.5 * ours
            watch.sample()

    watch.sample()
    tick(others=0.1, ours=2.0, n=6)  # we use both cores: not busy, it is us
    assert not watch.busy()
    tick(others=1.8, ours=0.2, n=1)  # half a second of another process: a blip, not a busy machine
    assert not watch.busy()
    tick(others=0.1, ours=2.0, n=4)
    tick(others=1.8, ours=0.2, n=2)  # a build starts and goes on
    assert watch.busy()
    tick(others=1.8, ours=0.2, n=2)
    assert watch.others_cores() == pytest.approx(1.8)
    tick(others=0.1, ours=1.0, n=6)  # quiet again, but not for the whole quiet window yet
    assert watch.busy()
    tick(others=0.1, ours=1.0, n=3)
    assert not watch.busy()


class Machine:
    """Scripted /proc: the machine's busy seconds, ours, and one sibling worker's (pid 7)."""

    def __init__(self) -> None:
        self.now, self.total, self.own, self.sibling = 0.0, 100.0, 10.0, 50.0
        self.running = 0  # the sibling's threads running at this moment
        self.watch = CpuWatch(busy_cores=0.75, quiet_cores=0.3, busy_window_s=2.0, quiet_window_s=4.0,
                              read_total=lambda: self.total, read_self=lambda: self.own, clock=lambda: self.now,
                              read_siblings=lambda fresh=False: {7: self.sibling}, running=lambda pid: self.running)
        self.watch.sample()

    def tick(self, foreign: float = 0.0, sibling: float = 0.0, ours: float = 0.0, n: int = 1) -> None:
        for _ in range(n):
            self.now += 0.5
            self.total += 0.5 * (foreign + sibling + ours)
            self.sibling += 0.5 * sibling
            self.own += 0.5 * ours
            self.running = 2 if sibling else 0
            self.watch.sample()


def test_a_sibling_worker_that_has_answered_is_not_load():
    """The chat worker after the completion worker's answer: quiet at once, where the same
    use by another program keeps the machine busy for the quiet window."""
    ours, foreign = Machine(), Machine()
    ours.tick(n=8)
    foreign.tick(n=8)
    ours.tick(sibling=1.9, n=4)  # the completion worker answers for 2 s beside us (we wait)
    foreign.tick(foreign=1.9, n=4)  # a build for 2 s
    assert ours.watch.busy() and foreign.watch.busy()  # both use the cores now: one thread each
    ours.tick(ours=1.9)  # our answer starts half a second after the sibling's ended
    foreign.tick(ours=1.9)
    assert not ours.watch.busy()  # all cores for it
    assert foreign.watch.busy()  # the build may come back: the quiet window first
    foreign.tick(ours=1.9, n=7)
    assert not foreign.watch.busy()


def test_a_short_answer_beside_ours_is_not_load_and_a_long_one_is():
    machine = Machine()
    machine.tick(ours=1.0, n=8)
    machine.tick(ours=1.0, sibling=1.0)  # a completion (half a second) while we answer
    assert not machine.watch.busy()
    machine.tick(ours=1.0, n=3)
    machine.tick(ours=1.0, sibling=1.0, n=2)  # a second of a sibling's answer beside ours
    assert machine.watch.busy()
    assert machine.watch.others_cores() == pytest.approx(1.0)  # what it uses now; its past: not load


def test_a_light_load_and_a_sibling_answer_end_quiet_when_the_answer_ends():
    """An editor using 0.4 of a core never makes the machine busy; with a sibling's answer
    beside it, busy while the answer runs and quiet the moment it ends (not held busy until
    everything else drops under the quiet threshold)."""
    machine = Machine()
    machine.tick(foreign=0.4, n=10)
    assert not machine.watch.busy()
    machine.tick(foreign=0.4, sibling=1.6, n=4)
    assert machine.watch.busy()
    machine.tick(foreign=0.4, ours=1.6)
    assert not machine.watch.busy()


def test_a_request_right_after_a_sibling_answer_sees_it_ended():
    """The last second of samples is full of the sibling's answer, but its threads are asleep
    now: a request that comes 0.2 s after the answer ended gets every core."""
    machine = Machine()
    machine.tick(n=8)
    machine.tick(sibling=1.9, n=4)
    assert machine.watch.busy()
    machine.running = 0  # the answer ends (between samples)
    assert not machine.watch.busy()
    machine.running = 1  # it works again
    assert machine.watch.busy()


def test_a_worker_started_since_the_last_lookup_is_a_sibling_not_load():
    """The editor starts its chat and completion workers together; the completion worker loads
    its model on both cores for 2 s, then idles, and the chat worker's first request comes.
    The periodic lookup (every 60 s here) has not seen the new worker: the lookup made when the
    load would turn the machine busy finds it, and its CPU time since it started is a sibling's.
    The same load from another program keeps the machine busy for the quiet window."""
    now, total, own, cpu = [0.0], [100.0], [10.0], {8: 0.0}
    alive: list[int] = []
    lookup = SiblingWorkers(every_s=60.0, find=lambda: list(alive), read=lambda pid: cpu[pid], clock=lambda: now[0])
    watch = CpuWatch(read_total=lambda: total[0], read_self=lambda: own[0], clock=lambda: now[0],
                     read_siblings=lookup, running=lambda pid: 0, started=lambda pid: 5.0)

    def tick(load: float, n: int) -> None:
        for _ in range(n):
            now[0] += 0.5
            total[0] += 0.5 * load
            if alive:
                cpu[8] += 0.5 * load
            watch.sample()

    watch.sample()
    tick(0.0, 10)  # quiet; the lookup ran at the first sample
    alive.append(8)  # t = 5 s: the completion worker starts and loads its model
    tick(1.9, 4)
    tick(0.0, 1)  # loaded and idle; our first request comes now
    assert not watch.busy()
    assert watch.others_cores() == pytest.approx(0.0)
    # another program, same use at the same moment: busy, and still for the quiet window
    now[0], total[0], own[0] = 0.0, 100.0, 10.0
    alive.clear()
    watch = CpuWatch(read_total=lambda: total[0], read_self=lambda: own[0], clock=lambda: now[0],
                     read_siblings=SiblingWorkers(every_s=60.0, find=list, read=lambda pid: None, clock=lambda: now[0]),
                     running=lambda pid: 0, started=lambda pid: 5.0)
    watch.sample()
    tick(0.0, 10)
    tick(1.9, 4)
    tick(0.0, 1)
    assert watch.busy()


def test_our_workers_are_found_on_proc(tmp_path):
    """A real worker (the embedded model) is a sibling, with the CPU time it used, asleep while
    it has nothing to do; a Python process that is not a worker, and this process, are not."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with WorkerClient(ModelSpec.parse("default"), socket_path=tmp_path / "w.sock") as client:
            pid = int(client.info()["pid"])
            found = find_workers()
            assert pid in found and other.pid not in found and os.getpid() not in found
            assert SiblingWorkers()()[pid] > 0  # it loaded a model
            began = read_started(pid)
            assert began is not None and time.monotonic() - 300 < began <= time.monotonic()
            answer = list(client.generate({"messages": [{"role": "user", "content": "hi"}], "params": {"max_new_tokens": 4}}))
            assert answer[-1]["type"] == "done"  # loaded, answered, now idle
            deadline = time.monotonic() + 30
            while running_threads(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert running_threads(pid) == 0 and running_threads(os.getpid()) >= 1  # (this one asks)
    finally:
        other.kill()
        other.wait()
        kill_workers(tmp_path)
