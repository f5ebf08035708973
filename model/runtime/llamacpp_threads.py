"""llama.cpp on all cores while the machine is quiet, on fewer while other processes use them.

Why (``model.runtime.cpu_watch``): llama.cpp's threads spin at a barrier after every
operation, so with other CPU-bound processes on the cores each barrier waits for a thread
that is not running: raw llama.cpp's decode fell from ~50 to 0.3-0.4 tok/s here with two
such processes. One thread has no barrier. The thread count of a llama.cpp context is fixed
when it is made, and the wheel exposes no way to change it, so there are two servers of the
same file: the quiet one (all cores, as raw llama.cpp) and, started the first time the
machine is busy, one with ``busy_threads``. The weights are one memory-mapped file, so the
second costs its own KV cache and buffers (~100 MB for the embedded model at 4,096 tokens),
and its own prompt cache: the first request after a switch reads its prompt again.

``pick()`` gives the server for a request that starts now: the busy one while the machine is
busy and it is ready, else the quiet one. ``better_than(server)`` tells a request streaming
on the quiet server that the busy one is there and the machine is busy: the engine then ends
that request and goes on with the rest of the answer on the busy server
(``LlamaCppEngine.run``). Going back to quiet needs no such move: one thread does not stall.

``STARCHAT_THREADS`` (or ``threads=`` in ``llamacpp_engine.load``) fixes the count: one server, no watch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .cpu_watch import CpuWatch

log = logging.getLogger(__name__)


class ServerSet:
    """The quiet server, the busy one once started, and the watch that chooses."""

    def __init__(self, quiet: Any, quiet_threads: int, start: Callable[[int], Any] | None = None,
                 busy_threads: int = 1, watch: CpuWatch | None = None):
        """``start(threads)`` makes another server of the same file (None: never one);
        ``watch`` says whether the machine is busy (None: never)."""
        self.quiet, self.quiet_threads = quiet, quiet_threads
        self.busy_threads = busy_threads
        self.busy_server: Any = None
        self.watch = watch
        self.start = start
        self._starting = False
        self._lock = threading.Lock()

    @property
    def adaptive(self) -> bool:
        """Whether the thread count follows the machine (else one server does everything)."""
        return self.start is not None and self.watch is not None and self.busy_threads < self.quiet_threads

    def pick(self) -> tuple[Any, int]:
        """(server, its threads) for a request that starts now."""
        if self.adaptive and self.watch is not None and self.watch.busy():
            server = self.busy_server
            if server is not None:
                return server, self.busy_threads
            self._start_busy()
        return self.quiet, self.quiet_threads

    def better_than(self, server: Any) -> bool:
        """True when a request running on ``server`` should move: the machine is busy, the busy
        server is ready, and ``server`` is the quiet one."""
        return (server is self.quiet and self.busy_server is not None and self.watch is not None
                and self.watch.busy())

    def _start_busy(self) -> None:
        with self._lock:
            if self._starting or self.busy_server is not None:
                return
            self._starting = True
        threading.Thread(target=self._load_busy, name="starchat-llamacpp-busy", daemon=True).start()

    def _load_busy(self) -> None:
        try:
            assert self.start is not None  # (only an adaptive set starts one)
            server = self.start(self.busy_threads)
        except Exception:  # noqa: BLE001 - the quiet server goes on serving everything
            log.warning("could not start llama.cpp with %d thread(s) for a busy machine", self.busy_threads,
                        exc_info=True)
            return
        with self._lock:
            self.busy_server = server
        log.info("the machine is busy: llama.cpp with %d thread(s) is ready beside the one with %d",
                 self.busy_threads, self.quiet_threads)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        self.quiet = self.busy_server = None
