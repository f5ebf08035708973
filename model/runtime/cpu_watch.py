"""How much of the machine's cores other processes use: is the machine busy?

llama.cpp's compute threads meet at a barrier after every operation of the graph (about 600
per token of the embedded model) and wait there by spinning (the wheel's OpenMP: libgomp
spins ~300,000 times, ~7 ms on these cores, before it sleeps). When other processes keep the
cores busy, the thread a barrier waits for is often not running, and the spinning thread
burns its time slice waiting for it: raw llama.cpp fell from ~50 to 0.3-0.4 tok/s here with
two CPU-bound processes beside it. One thread has no barrier to wait at. So the engine runs
on all cores while the machine is quiet and on fewer while others use it
(``model.runtime.llamacpp_threads``); this module says which.

``CpuWatch`` samples ``/proc/stat`` (all CPU time but idle and iowait) and ``/proc/self/stat``
(this process's) twice a second; the difference is the other processes' use, in cores. The
machine turns busy when they used ``busy_cores`` or more over the last ``busy_window_s``, and
quiet again when they used less than ``quiet_cores`` over the last ``quiet_window_s`` (the
gap between the two thresholds and windows keeps it from flapping). Linux only: elsewhere
the machine counts as quiet.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable

HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def read_total_busy() -> float | None:
    """Seconds of CPU time all processes used since boot (every core), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: all but idle and iowait (steal: the
    # hypervisor gave the core to someone else, so it was not ours either)
    values = [int(v) for v in fields[1:9]]
    return (sum(values) - values[3] - values[4]) / HZ


def read_own() -> float | None:
    """Seconds of CPU time this process used (all its threads)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime


class CpuWatch:
    """Other processes' CPU use, sampled in a thread of its own; ``busy()`` is the verdict."""

    def __init__(self, busy_cores: float = 0.75, quiet_cores: float = 0.3, busy_window_s: float = 2.0,
                 quiet_window_s: float = 4.0, interval_s: float = 0.5,
                 read_total: Callable[[], float | None] = read_total_busy,
                 read_self: Callable[[], float | None] = read_own, clock: Callable[[], float] = time.monotonic):
        self.busy_cores, self.quiet_cores = busy_cores, quiet_cores
        self.busy_window_s, self.quiet_window_s = busy_window_s, quiet_window_s
        self.interval_s = interval_s
        self._read_total, self._read_self, self._clock = read_total, read_self, clock
        self._samples: deque[tuple[float, float, float]] = deque()  # (time, total busy s, own s)
        self._busy = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Take one sample and update the verdict (the thread calls this; tests call it directly)."""
        total, own = self._read_total(), self._read_self()
        if total is None or own is None:
            return
        now = self._clock()
        with self._lock:
            self._samples.append((now, total, own))
            keep = max(self.busy_window_s, self.quiet_window_s) + self.interval_s
            while self._samples and now - self._samples[0][0] > keep:
                self._samples.popleft()
            if self._busy:
                others = self._others(self.quiet_window_s)
                self._busy = others is None or others >= self.quiet_cores
            else:
                others = self._others(self.busy_window_s)
                self._busy = others is not None and others >= self.busy_cores

    def _others(self, window_s: float) -> float | None:
        """Other processes' mean use in cores over the last ``window_s`` (None: too few samples)."""
        now, total, own = self._samples[-1]
        first = next((s for s in self._samples if now - s[0] <= window_s + 1e-9), None)
        if first is None or now - first[0] < window_s * 0.66:
            return None
        span = now - first[0]
        return max(0.0, (total - first[1]) - (own - first[2])) / span

    def others_cores(self, window_s: float | None = None) -> float | None:
        with self._lock:
            return self._others(window_s or self.busy_window_s) if self._samples else None

    def busy(self) -> bool:
        with self._lock:
            return self._busy

    def start(self) -> CpuWatch:
        if self._thread is None and read_total_busy() is not None:
            self._thread = threading.Thread(target=self._run, name="starchat-cpu-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()
