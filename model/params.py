"""Generation settings as clients send them, validated; no torch, so any client can check them.

The torch engine (``model.engine``) and llama.cpp (``model.llamacpp_engine``) both read
these: ``max_new_tokens``, ``temperature`` (0 = greedy), ``top_p``, ``top_k`` (0 = off),
``repetition_penalty`` (1.0 = off), ``stop`` strings and ``seed``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class GenerationParams:
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @classmethod
    def from_dict(cls, data: dict | None) -> GenerationParams:
        """Validate user settings; raises ValueError with a sentence on bad values."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown generation setting(s): {', '.join(unknown)}.")
        p = cls(**data)
        checks = [
            (isinstance(p.max_new_tokens, int) and not isinstance(p.max_new_tokens, bool) and 1 <= p.max_new_tokens <= 100_000, "max_new_tokens must be an integer from 1 to 100000"),
            (isinstance(p.temperature, (int, float)) and 0 <= p.temperature <= 10, "temperature must be a number from 0 to 10"),
            (isinstance(p.top_p, (int, float)) and 0 < p.top_p <= 1, "top_p must be a number in (0, 1]"),
            (isinstance(p.top_k, int) and p.top_k >= 0, "top_k must be a non-negative integer"),
            (isinstance(p.repetition_penalty, (int, float)) and 0 < p.repetition_penalty <= 10, "repetition_penalty must be a number in (0, 10]"),
            (isinstance(p.stop, (list, tuple)) and all(isinstance(s, str) and s for s in p.stop), "stop must be a list of non-empty strings"),
            (p.seed is None or isinstance(p.seed, int), "seed must be an integer"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}.")
        p.stop = tuple(p.stop)
        return p

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d
