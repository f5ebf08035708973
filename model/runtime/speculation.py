"""Draft-free speculative decoding on llama.cpp: answers that copy their prompt go faster.

Fix, Add docstring, Write tests and most answers about a selection write again long runs of
the code they were given. llama.cpp (the ``xllamacpp`` wheel) drafts such runs without a
draft model: at each step it looks the answer's last ``lookup`` tokens up in the prompt and
the answer so far, and proposes the ``draft`` tokens that followed them there; one batch
checks the whole draft and keeps its longest prefix that the model's own sampler would have
chosen, plus the model's next token. So the text is exactly what decoding token by token
gives (greedy: the same tokens; a test holds us to it), and a step that finds nothing to
copy costs nothing.

What the wheel (2026.10) offers and what it does not:

- ``CommonParams.speculative``: ``types`` (``ngram_simple``, ``ngram_map_k``,
  ``ngram_map_k4v``, ``ngram_mod``, ``ngram_cache``, draft-model ones), each n-gram kind's
  sizes (``ngram_simple.size_n``: the lookup length, ``.size_m``: the draft length) and
  ``draft.n_max`` / ``draft.n_min``;
- per request: nothing. Its server reads no speculative key from a request (``speculative.n_max``,
  ``speculative.types`` and ``speculative.type`` were all sent and ignored, measured), so the
  setting holds for every request of a loaded model, completions included. We choose it once,
  from the measurements of each request kind (``benchmarks/bench_speed.py``, docs/performance.md).
- its counters per request: ``draft_n`` and ``draft_n_accepted`` in the timings (our usage
  reports them as ``draft_tokens`` and ``draft_accepted``).

Off by default, because the text is not always the same. llama.cpp's CPU kernels are not
batch-invariant: a token computed in a batch (a verified draft, or a prompt) can round
differently from the same token decoded alone, and at a near tie the greedy choice flips.
Measured on the embedded Q4_1 file (docs/performance.md): giving
the first k tokens of a greedy answer back as a prompt, the continuation left the one-by-one
answer after 5 of 88 tokens (k=8, one thread) and after 4 of 24 (k=72, two threads), the
other cuts of the same answer matching to the end. Speculation on the bench's requests moved
three of nine answers this way, and its gain was 0.9-1.3x (docs/performance.md), short of
what would pay for answers that differ from the plain ones. ``STARCHAT_SPECULATION=on`` (or
``KIND:LOOKUP:DRAFT``, e.g. ``ngram-simple:12:16``) loads models with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

#: llama.cpp's names of the draft-free kinds (``--spec-type``) -> ``common_speculative_type`` members.
KINDS = {"ngram-simple": "COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE", "ngram-map-k": "COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K",
         "ngram-map-k4v": "COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K4V", "ngram-mod": "COMMON_SPECULATIVE_TYPE_NGRAM_MOD"}


@dataclass(frozen=True)
class Speculation:
    """One draft-free setting: ``kind`` (a key of ``KINDS``), the lookup length in tokens and
    the longest draft. ``ngram-mod`` looks up ``lookup`` tokens in a hashed table of every
    n-gram seen (prompts of earlier requests too); the others search the request's own tokens."""

    kind: str = "ngram-simple"
    lookup: int = 12
    draft: int = 16

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Unknown speculation kind {self.kind!r}: use one of {', '.join(KINDS)}.")
        if not 1 <= self.lookup <= 1024 or not 1 <= self.draft <= 256:
            raise ValueError("Speculation needs a lookup of 1 to 1,024 tokens and a draft of 1 to 256.")

    def apply(self, params: Any, xllamacpp: Any) -> None:
        """Set ``params`` (a ``CommonParams``) to speculate this way."""
        spec = params.speculative
        spec.types = [getattr(xllamacpp.common_speculative_type, KINDS[self.kind])]
        spec.draft.n_max = self.draft
        spec.draft.n_min = 0
        if self.kind == "ngram-mod":
            spec.ngram_mod.n_match = self.lookup
            spec.ngram_mod.n_max = self.draft
            spec.ngram_mod.n_min = 1
        else:
            table = {"ngram-simple": spec.ngram_simple, "ngram-map-k": spec.ngram_map_k,
                     "ngram-map-k4v": spec.ngram_map_k4v}[self.kind]
            table.size_n = self.lookup
            table.size_m = self.draft
            table.min_hits = 1


#: The setting ``STARCHAT_SPECULATION=on`` gives (docs/performance.md, "Speculative decoding").
DEFAULT = Speculation()


def default() -> Speculation | None:
    """The speculation a loaded model gets: None (off), ``DEFAULT`` with
    ``STARCHAT_SPECULATION=on``, or ``KIND:LOOKUP:DRAFT`` as given; ValueError with a sentence
    for anything else."""
    value = os.environ.get("STARCHAT_SPECULATION", "").strip().lower()
    if value in ("", "off", "0", "none"):
        return None
    if value in ("on", "1"):
        return DEFAULT
    kind, _, rest = value.partition(":")
    lookup, _, draft = rest.partition(":")
    if not (lookup.isdigit() and draft.isdigit()):
        raise ValueError(f"STARCHAT_SPECULATION={value!r}: use off, on or KIND:LOOKUP:DRAFT (e.g. ngram-simple:12:16).")
    return Speculation(kind, int(lookup), int(draft))
