"""Generation settings: one definition and one set of rules, without torch.

Every place that takes sampling settings checks them here, so a value is accepted or
refused with the same sentence everywhere: the worker (each request's ``params``), the
OpenAI-compatible backend, the language server's ``starchat.generation`` settings and the
``starchat ask``/``chat`` flags. :meth:`GenerationParams.from_dict` is strict (a ValueError
with one sentence per bad field); :meth:`GenerationParams.parse` is lenient (each bad field
keeps its default and its sentence is returned), which is what settings files want.

The bounds keep every value finite and packable (msgpack, JSON): integers are bounded, NaN
and infinities are refused, and a whole-number float such as ``64.0`` (JavaScript and Lua
clients send those) counts as the integer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

MAX_NEW_TOKENS = 100_000
MAX_TOP_K = 1_000_000
MAX_SEED = 2**32 - 1  # what llama.cpp and most OpenAI-compatible servers take
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
MAX_ADAPTER_SCALE = 4.0


def _integer(value: Any) -> int | None:
    """``value`` as an int when it is a whole number (not a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _number(value: Any) -> float | None:
    """``value`` as a finite float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800"
        return False
    return True


# The numeric fields: (conversion, lowest, lowest allowed itself?, highest, the sentence).
_RANGES: dict[str, tuple[Any, float, bool, float, str]] = {
    "max_new_tokens": (_integer, 1, True, MAX_NEW_TOKENS,
                       f"max_new_tokens must be an integer from 1 to {MAX_NEW_TOKENS}."),
    "temperature": (_number, 0, True, 10, "temperature must be a number from 0 (greedy) to 10."),
    "top_p": (_number, 0, False, 1, "top_p must be a number greater than 0 and at most 1."),
    "top_k": (_integer, 0, True, MAX_TOP_K, f"top_k must be an integer from 0 (off) to {MAX_TOP_K}."),
    "repetition_penalty": (_number, 0, False, 10,
                           "repetition_penalty must be a number greater than 0 and at most 10 (1 is off)."),
    "adapter_scale": (_number, 0, True, MAX_ADAPTER_SCALE,
                      f"adapter_scale must be a number from 0 (the base model alone) to {MAX_ADAPTER_SCALE:g}."),
    "seed": (_integer, 0, True, MAX_SEED,
             f"seed must be an integer from 0 to {MAX_SEED}, or null for a random one."),
}
_STOP_SENTENCE = (f"stop must be a list of at most {MAX_STOP_STRINGS} non-empty strings "
                  f"of at most {MAX_STOP_CHARS} characters each.")


def _check(name: str, value: Any) -> tuple[Any, str | None]:
    """The normalised value of one field, or a sentence saying what is wrong with it."""
    if name == "stop":
        ok = (isinstance(value, (list, tuple)) and len(value) <= MAX_STOP_STRINGS
              and all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS and _utf8(s) for s in value))
        return (tuple(value), None) if ok else (None, _STOP_SENTENCE)
    if name == "seed" and value is None:
        return None, None
    convert, low, low_allowed, high, sentence = _RANGES[name]
    x = convert(value)
    if x is None or x > high or x < low or (x == low and not low_allowed):
        return None, sentence
    return x, None


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings of one request; construction checks every field."""

    max_new_tokens: int = 512
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    stop: tuple[str, ...] = ()
    seed: int | None = None  # None = the global random generator
    # How much of the spec's LoRA adapter (``BASE+ADAPTER`` on llama.cpp) this request uses:
    # 1 = as trained, 0 = the base model alone; ignored where the spec has no adapter.
    adapter_scale: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            value, problem = _check(f.name, getattr(self, f.name))
            if problem:
                problems.append(problem)
            else:
                object.__setattr__(self, f.name, value)
        if problems:
            raise ValueError(" ".join(problems))

    @classmethod
    def parse(cls, data: Any) -> tuple[GenerationParams, dict[str, str]]:
        """Lenient parsing for settings: each bad or unknown field is left out (its default
        stays) and named in the returned ``{field: sentence}``."""
        if data is None:
            return cls(), {}
        if not isinstance(data, dict):
            return cls(), {"": "Generation settings must be a map of names to values."}
        known = FIELD_NAMES
        good: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for key, value in data.items():
            if key not in known:
                problems[str(key)] = f"Unknown generation setting {str(key)[:40]!r} (known: {', '.join(known)})."
                continue
            checked, problem = _check(key, value)
            if problem:
                problems[key] = problem
            else:
                good[key] = checked
        return cls(**good), problems

    @classmethod
    def from_dict(cls, data: Any) -> GenerationParams:
        """Strict parsing for requests: raises ValueError with one sentence per bad field."""
        params, problems = cls.parse(data)
        if problems:
            raise ValueError(" ".join(problems.values()))
        return params

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a request (msgpack/JSON): ``stop`` as a list."""
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


FIELD_NAMES = tuple(f.name for f in fields(GenerationParams))
