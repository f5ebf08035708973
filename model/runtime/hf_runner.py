"""The runner interface over a transformers model, for architectures ``llama`` lacks.

A runner (``runner.Runner``) is what ``Engine`` drives (``llama.LlamaModel`` is the other one):

- ``new_cache()``: an empty KV cache for one request (has ``crop`` and ``get_seq_length``,
  and deep-copies, so the prefix store can keep and share it);
- ``prefill(ids, cache)``: feed ids after what the cache holds, return the last logits [vocab];
- ``decode_batch(tokens, caches)``: one token for each request, logits [batch, vocab];
  each cache ends up holding its request's new token.

For a batch, the requests' DynamicCaches are left-padded into one for the forward pass and
split back afterwards (copies that ``model.runtime.llama`` avoids by attending per request).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from .runner import eos_id_set


class HFRunner:
    def __init__(self, model: Any):
        self.model = model
        self.config = model.config
        self.device = str(model.device) if hasattr(model, "device") else "cpu"
        # transformers renamed `past_key_values` to `cache` (5.2x); use whichever this one has.
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.eos_ids = eos_id_set(getattr(getattr(model, "generation_config", None), "eos_token_id", None))

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.config)

    def prefill(self, ids: Sequence[int], cache: Any) -> Any:
        import torch

        inputs = torch.tensor([list(ids)], device=self.device)
        out = self.model(input_ids=inputs, use_cache=True, logits_to_keep=1, **{self.cache_arg: cache})
        return out.logits[0, -1]

    def decode_batch(self, tokens: Sequence[int], caches: Sequence[Any]) -> Any:
        import torch

        if len(caches) == 1:
            return self.prefill(tokens, caches[0])[None]
        lengths = [c.get_seq_length() for c in caches]
        longest, batch = max(lengths), len(caches)
        merged = self.new_cache()
        for layer in range(len(caches[0].layers)):
            k0 = caches[0].layers[layer].keys
            keys = k0.new_zeros((batch, k0.shape[1], longest, k0.shape[3]))
            values = torch.zeros_like(keys)
            for i, c in enumerate(caches):
                keys[i, :, longest - lengths[i] :] = c.layers[layer].keys[0]
                values[i, :, longest - lengths[i] :] = c.layers[layer].values[0]
            merged.update(keys, values, layer)
        mask = torch.zeros((batch, longest + 1), dtype=torch.long, device=self.device)
        for i, n in enumerate(lengths):
            mask[i, longest - n :] = 1
        inputs = torch.tensor([[t] for t in tokens], device=self.device)
        positions = torch.tensor([[n] for n in lengths], device=self.device)
        out = self.model(input_ids=inputs, attention_mask=mask, position_ids=positions,
                         use_cache=True, logits_to_keep=1, **{self.cache_arg: merged})
        merged = getattr(out, self.cache_arg)
        for i, c in enumerate(caches):  # give each request its rows back, in place
            start = longest - lengths[i]
            for own, stacked in zip(c.layers, merged.layers, strict=True):
                own.keys = stacked.keys[i : i + 1, :, start:].clone()
                own.values = stacked.values[i : i + 1, :, start:].clone()
        return out.logits[:, -1, :]
