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

Our own other workers (``python -m model.serving.worker``: with ``--merge`` the editor runs
one for chat and one for completions) count only while they are working: their use over the
last second, not over the windows, and only while one of their threads runs when a request
asks (``busy()``: llama.cpp's threads sleep a few ms after an answer, so a request that comes
just after a sibling's answer is not held to samples taken during it). Counted over the windows, a completion worker's answer
made the chat worker answer the next request on one thread, at half speed, for the 4 s of
the quiet window after it (measured: every adapted model in ``bench_adapt``'s alternating
decode rounds at ~0.5x the base). A sibling that answers beside us for a second or more
still turns the machine busy, as it should: two llama.cpp servers on the same cores stall
each other's barriers as any other load does. Who our workers are is looked up on /proc every
5 s, and again whenever other programs' use is about to turn the machine busy: a worker that
started since the last lookup (the editor starts the chat and completion workers together, and
each loads its model on every core) is then found, and its CPU time since it started (its
start time on /proc) counts as a sibling's, not as another program's. Without that second
lookup the first answer after both workers started ran on one thread, at half speed.
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


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, ...] (field 3 onwards)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def read_own(pid: int | str = "self") -> float | None:
    """Seconds of CPU time this process (or process ``pid``) used, all its threads."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / HZ  # utime, stime


def read_started(pid: int) -> float | None:
    """When process ``pid`` started, on ``time.monotonic()``'s clock. /proc counts it in ticks
    since boot, suspended time included; the monotonic clock leaves that out."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    boot = getattr(time, "CLOCK_BOOTTIME", None)
    suspended = 0.0 if boot is None else time.clock_gettime(boot) - time.monotonic()
    return int(fields[19]) / HZ - suspended  # starttime


WORKER_MODULE = b"model.serving.worker"


def find_workers() -> list[int]:
    """This user's other StarChat model workers (``python -m model.serving.worker``), by pid."""
    found: list[int] = []
    me, uid = os.getpid(), os.getuid()
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if WORKER_MODULE in args[1:4]:  # python [flags] -m model.serving.worker
            found.append(int(name))
    return found


class SiblingWorkers:
    """CPU seconds of our other workers, by pid; who they are is looked up every ``every_s``
    (a walk of /proc), their CPU time at every call (one small read each)."""

    def __init__(self, every_s: float = 5.0, find: Callable[[], list[int]] = find_workers,
                 read: Callable[[int], float | None] = read_own, clock: Callable[[], float] = time.monotonic):
        self.every_s, self._find, self._read, self._clock = every_s, find, read, clock
        self._pids: list[int] = []
        self._found_at: float | None = None

    def __call__(self, fresh: bool = False) -> dict[int, float]:
        """``fresh``: walk /proc now, whenever the last walk was."""
        now = self._clock()
        if fresh or self._found_at is None or now - self._found_at >= self.every_s:
            self._pids, self._found_at = self._find(), now
        cpu = {pid: self._read(pid) for pid in self._pids}
        return {pid: seconds for pid, seconds in cpu.items() if seconds is not None}


def running_threads(pid: int) -> int:
    """How many of process ``pid``'s threads are running or runnable now (state R): llama.cpp's
    compute threads are while it evaluates, and asleep a few ms after."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    return sum(1 for task in tasks if (fields := _stat_fields(f"{pid}/task/{task}")) and fields[0] == "R")


def sibling_seconds(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds our sibling workers used between two samples (those in both: a worker that
    appeared in between counts as any other process)."""
    return sum(max(0.0, seconds - before[pid]) for pid, seconds in after.items() if pid in before)


class CpuWatch:
    """Other processes' CPU use, sampled in a thread of its own; ``busy()`` is the verdict."""

    def __init__(self, busy_cores: float = 0.75, quiet_cores: float = 0.3, busy_window_s: float = 2.0,
                 quiet_window_s: float = 4.0, interval_s: float = 0.5,
                 read_total: Callable[[], float | None] = read_total_busy,
                 read_self: Callable[[], float | None] = read_own, clock: Callable[[], float] = time.monotonic,
                 read_siblings: Callable[..., dict[int, float]] | None = None, sibling_s: float = 1.0,
                 running: Callable[[int], int] | None = None,
                 started: Callable[[int], float | None] = read_started):
        """``read_siblings(fresh=False)``: our other workers' CPU seconds by pid (default:
        ``SiblingWorkers``; ``fresh``: look them up now); they count as load only while they kept
        working for the last ``sibling_s``. ``started(pid)``: when a process started, on
        ``clock``'s time."""
        self.busy_cores, self.quiet_cores = busy_cores, quiet_cores
        self.busy_window_s, self.quiet_window_s = busy_window_s, quiet_window_s
        self.interval_s, self.sibling_s = interval_s, sibling_s
        self._read_total, self._read_self, self._clock = read_total, read_self, clock
        self._read_siblings = read_siblings if read_siblings is not None else SiblingWorkers(clock=clock)
        self._running = running if running is not None else running_threads
        self._started = started
        # (time, total busy s, own s, {sibling pid: its s})
        self._samples: deque[tuple[float, float, float, dict[int, float]]] = deque()
        self._busy = False  # the verdict: other programs' use, or a sibling working now
        self._busy_foreign = False  # other programs' alone
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Take one sample and update the verdict (the thread calls this; tests call it directly)."""
        total, own, siblings = self._read_total(), self._read_self(), self._read_siblings()
        if total is None or own is None:
            return
        now = self._clock()
        with self._lock:
            self._add((now, total, own, siblings))
            foreign = self._foreign(self.busy_window_s)
            turning = not self._busy_foreign and foreign is not None and foreign >= self.busy_cores
        if turning:  # about to turn busy: is the load a worker of ours started since the last walk?
            fresh = self._read_siblings(fresh=True)
            if set(fresh) - set(siblings):
                with self._lock:
                    self._samples.pop()
                    self._add((now, total, own, fresh))
        with self._lock:
            # other programs: over the windows, with hysteresis (a build comes and goes)
            if self._busy_foreign:
                foreign = self._foreign(self.quiet_window_s)
                self._busy_foreign = foreign is None or foreign >= self.quiet_cores
            else:
                foreign = self._foreign(self.busy_window_s)
                self._busy_foreign = foreign is not None and foreign >= self.busy_cores
            # our sibling workers: only while they work, no hysteresis (their answers end)
            self._busy = self._busy_foreign or self._siblings_now() >= self.busy_cores

    def _add(self, sample: tuple[float, float, float, dict[int, float]]) -> None:
        """Keep ``sample`` (and the windows' worth before it). A sibling worker in it that the
        earlier samples lack started since the last lookup, or was missed by it: it gets CPU
        times there too -- none before it started, and its CPU time so far spread evenly since
        (a worker loading its model works flat out) -- so that its use counts as a sibling's."""
        now, _, _, siblings = sample
        keep = max(self.busy_window_s, self.quiet_window_s) + self.interval_s
        while self._samples and now - self._samples[0][0] > keep:
            self._samples.popleft()
        for pid in set(siblings).difference(*(s[3] for s in self._samples)):
            began = self._started(pid)
            if began is None or began >= now:
                continue
            for t, *_, earlier in self._samples:
                earlier[pid] = 0.0 if t <= began else siblings[pid] * (t - began) / (now - began)
        self._samples.append(sample)

    def _foreign(self, window_s: float) -> float | None:
        """Other programs' mean use in cores over the last ``window_s``: all but us and our
        sibling workers (None: too few samples)."""
        now, total, own, siblings = self._samples[-1]
        first = next((s for s in self._samples if now - s[0] <= window_s + 1e-9), None)
        if first is None or now - first[0] < window_s * 0.66:
            return None
        span = now - first[0]
        return max(0.0, (total - first[1]) - (own - first[2]) - sibling_seconds(first[3], siblings)) / span

    def _others(self, window_s: float) -> float | None:
        """Everyone else's use in cores: other programs' over ``window_s``, and our siblings' now."""
        foreign = self._foreign(window_s)
        return None if foreign is None else foreign + self._siblings_now()

    def _siblings_now(self) -> float:
        """Our sibling workers' use in cores, the least of each sample interval over the last
        ``sibling_s`` (a short answer beside ours is not load; one that goes on is)."""
        now = self._samples[-1][0]
        recent = [s for s in self._samples if now - s[0] <= self.sibling_s + 1e-9]
        if len(recent) < 2:
            return 0.0
        return min((sibling_seconds(a[3], b[3]) / (b[0] - a[0]) for a, b in zip(recent, recent[1:], strict=False)
                    if b[0] > a[0]), default=0.0)

    def others_cores(self, window_s: float | None = None) -> float | None:
        with self._lock:
            return self._others(window_s or self.busy_window_s) if self._samples else None

    def busy(self) -> bool:
        """The verdict for a request that starts now. Busy only because a sibling worker works:
        only while one of its threads runs now (its answer may have ended since the last
        sample; a request that comes a moment after should not run on one thread for that)."""
        with self._lock:
            if not self._busy or self._busy_foreign or not self._samples:
                return self._busy
            siblings = list(self._samples[-1][3])
        return any(self._running(pid) for pid in siblings)  # a sibling computing right now

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
