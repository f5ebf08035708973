"""What ``Engine`` drives: the ``Runner`` interface, written down once.

Two classes have it: ``model.runtime.llama.LlamaModel`` (our own forward pass) and
``model.runtime.hf_runner.HFRunner`` (over a transformers model). ``loading`` picks one and
hands it over as ``LoadedModel.runner``. No torch import here: the types are ``Any``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Runner(Protocol):
    #: Token ids that end an answer (from the model's generation config).
    eos_ids: set[int]

    def new_cache(self) -> Any:
        """An empty KV cache for one request: has ``crop(n)`` (transformers' negative-count
        convention) and ``get_seq_length()``, and deep-copies, so the prefix store can keep
        and share it."""
        ...

    def prefill(self, ids: Sequence[int], cache: Any) -> Any:
        """Feed ``ids`` after what ``cache`` holds; the last position's logits [vocab]."""
        ...

    def decode_batch(self, tokens: Sequence[int], caches: Sequence[Any]) -> Any:
        """One token for each request; logits [batch, vocab]. Each cache gains its token."""
        ...


def eos_id_set(eos: Any) -> set[int]:
    """generation_config's ``eos_token_id`` (an id, a list of ids or None) as a set."""
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
