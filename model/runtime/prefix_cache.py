"""Reuse of key/value caches across requests that share a token prefix.

A chat's second turn repeats the first turn's prompt and answer, and an Explain followed by
a Fix on the same code repeats the system prompt and file header. Finished requests leave
their KV cache here, keyed by the exact token ids it holds; a new request takes a copy of
the entry with the longest common prefix, cropped to that prefix, and prefills only the
rest. Entries are evicted least-recently-used under a byte cap.
"""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

DEFAULT_PREFIX_CACHE_BYTES = int(os.environ.get("STARCHAT_PREFIX_CACHE_MB", 512)) * 1024 * 1024
MIN_REUSE = 8  # below this, copying a cache costs more than it saves


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _nbytes(cache: Any) -> int:
    if hasattr(cache, "nbytes"):  # model.runtime.llama.KVCache
        return int(cache.nbytes)
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if t is not None and hasattr(t, "numel"):
                total += t.numel() * t.element_size()
    return total


class PrefixCache:
    """LRU of (token ids -> KV cache) with a memory cap."""

    def __init__(self, max_bytes: int = DEFAULT_PREFIX_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def put(self, ids: Sequence[int], cache: Any) -> None:
        """Keep ``cache`` (holding exactly ``ids``); drop entries it extends."""
        if self.max_bytes <= 0 or len(ids) < MIN_REUSE:
            return
        key = tuple(ids)
        if hasattr(cache, "compact"):  # model.runtime.llama.KVCache: keep no spare capacity in the store
            cache.compact()
        size = _nbytes(cache)
        if size > self.max_bytes:
            return
        with self._lock:
            for other in [k for k in self._entries if len(k) <= len(key) and key[: len(k)] == k]:
                self._bytes -= self._entries.pop(other)[1]
            self._entries[key] = (cache, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, (_, freed) = self._entries.popitem(last=False)
                self._bytes -= freed

    def take(self, prompt_ids: Sequence[int]) -> tuple[Any, int]:
        """A private copy of the best cache for ``prompt_ids`` and how many ids it covers.

        At least one prompt token is always left to prefill, since its logits are needed.
        """
        with self._lock:
            best_key, best = None, 0
            for key in self._entries:
                n = _common_prefix(key, prompt_ids)
                if n > best:
                    best_key, best = key, n
            best = min(best, len(prompt_ids) - 1)
            if best_key is None or best < MIN_REUSE:
                return None, 0
            self._entries.move_to_end(best_key)
            cache = copy.deepcopy(self._entries[best_key][0])
        extra = len(best_key) - best
        if extra:
            cache.crop(-extra)  # transformers 5 crops by a negative count of tokens to drop
        return cache, best
