"""Streaming text generation: a plain generator of text deltas, no LSP anywhere.

``Engine.generate`` returns a ``Stream``: iterate it for text deltas; afterwards
``stream.usage`` holds prompt tokens, generated tokens, time to first token and decode
speed, and ``stream.finish_reason`` says why it ended (``stop``, ``length``, ``cancelled``).

The decode loop is ours rather than ``model.generate`` so that one request can be advanced
one token at a time (``Decoder.step``): the worker interleaves concurrent requests fairly,
cancellation is checked between steps, and stop strings are held back before they are
emitted. Prefill computes logits for the last position only. The forward passes go through
a runner (``LoadedModel.runner``: ``model.runtime.llama`` or ``model.runtime.hf_runner``), token choice
through ``model.runtime.sampling``. Sampling settings are ``model.prompt.params.GenerationParams``.
Chats get repetition control as on llama.cpp: DRY over the answer's own tokens once it
repeats a line or sentence (``model.runtime.repetition``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..prompt.chat_format import ChatFormat, chat_format_for
from ..prompt.params import GenerationParams  # re-exported: defined torch-free there
from ..prompt.stops import StopFilter
from .loading import LoadedModel
from .prefix_cache import DEFAULT_PREFIX_CACHE_BYTES, PrefixCache
from .repetition import DRY_BREAKERS, RepeatWatch, dry_penalties
from .sampling import Sampler


class Decoder:
    """One request's decode state, advanced one token per ``step()``."""

    def __init__(self, engine: Engine, prompt_ids: Sequence[int], params: GenerationParams,
                 cancel: threading.Event | None = None, stop_strings: Sequence[str] = (),
                 stop_ids: Sequence[int] = (), heal: str = "", dry: bool = True):
        self.engine = engine
        # repetition control (model.runtime.repetition): DRY over the answer's own tokens once
        # it repeats a line or sentence; chats only (a completion's heal or stop ids: code)
        self.watch = RepeatWatch() if dry and not (heal or stop_ids) else None
        self.dry_on = False
        self.heal = heal  # the answer must start with this text, not shown (model.prompt.fim)
        self.heal_left = heal  # the part of it no chosen token has spelled yet
        self.stop_ids = frozenset(stop_ids)  # besides the chat format's and eos (completions)
        self.params = params
        self.cancel = cancel or threading.Event()
        self.prompt_ids = list(prompt_ids)
        self.stop_strings = tuple(stop_strings) + tuple(params.stop)
        self.stops = StopFilter(self.stop_strings)
        self.generated: list[int] = []
        self.text = ""  # decoded text of the generated ids, stop string removed
        self.finish_reason: str | None = None
        self.cache: Any = None
        self.fed: list[int] = []  # ids whose keys/values are in self.cache, in order
        self.reused = 0  # prompt tokens taken from the prefix cache
        self.t_start = time.perf_counter()
        self.t_first: float | None = None
        self.t_end: float | None = None
        self.sampler = Sampler(params, engine.device)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def _finish(self, reason: str) -> None:
        self.finish_reason = reason
        self.t_end = time.perf_counter()
        if self.cache is not None and self.fed:
            self.engine.prefix_cache.put(self.fed, self.cache)
        self.cache = None  # the store keeps it (or frees it); the stream no longer needs it

    def _choose(self, logits: Any) -> int:
        if self.heal_left:  # token healing: only tokens that go on spelling the healed text
            allowed = self.engine.heal_candidates(self.heal_left, logits.shape[-1])
            if allowed:
                masked = logits.new_full(logits.shape, float("-inf"))
                masked[..., allowed] = logits[..., allowed]
                logits = masked
        if self.dry_on and (penalties := dry_penalties(self.generated, self.engine.dry_breaker_ids(logits.shape[-1]))):
            logits = logits.clone()
            for token, penalty in penalties.items():
                logits[..., token] -= penalty
        token = self.sampler.choose(logits, self.prompt_ids + self.generated if self.sampler.needs_history else ())
        if self.heal_left:
            text = self.engine.token_texts(logits.shape[-1])[token]
            self.heal_left = self.heal_left[len(text):] if self.heal_left.startswith(text) else ""
        return token

    def step(self) -> str:
        """Run one forward pass; return the new text (maybe empty). Check ``done`` after."""
        import torch

        if self.done:
            return ""
        if self.cancel.is_set():
            self._finish("cancelled")
            return ""
        eng = self.engine
        with torch.inference_mode():
            if self.cache is None and not self.generated:
                self.cache, self.reused = eng.prefix_cache.take(self.prompt_ids)
                if self.cache is None:
                    self.cache = eng.runner.new_cache()
                self.fed = list(self.prompt_ids)
                logits = eng.runner.prefill(self.prompt_ids[self.reused :], self.cache)
            else:
                self.fed.append(self.generated[-1])
                logits = eng.runner.decode_batch([self.generated[-1]], [self.cache])[0]
        return self._accept(logits)

    @property
    def decoding(self) -> bool:
        """Past the prefill and still running: may join a batched step."""
        return not self.done and bool(self.generated) and self.cache is not None and not self.cancel.is_set()

    def _accept(self, logits: Any) -> str:
        """Pick the next token from this step's logits and turn it into text."""
        import torch

        eng = self.engine
        with torch.inference_mode():
            token = self._choose(logits)
        if self.t_first is None:
            self.t_first = time.perf_counter()
        if token in eng.chat_format.stop_token_ids or token in eng.eos_ids or token in self.stop_ids:
            self._finish("stop")
            return self._flush(final=True)
        self.generated.append(token)
        delta = self._flush(final=False)
        if self.watch is not None and not self.dry_on and self.watch.feed(delta):
            self.dry_on = True
        if self.done:
            return delta
        if len(self.generated) >= self.params.max_new_tokens:
            self._finish("length")
            return delta + self._flush(final=True)
        if len(self.prompt_ids) + len(self.generated) >= eng.context_window:
            self._finish("length")
            return delta + self._flush(final=True)
        return delta

    def _flush(self, final: bool) -> str:
        """Decode, cut at a stop string, and return text not yet emitted that is safe to show
        (``model.prompt.stops.StopFilter``: a stop string's start and half a UTF-8 character
        wait for the next token)."""
        text = self.engine.tokenizer.decode(self.generated, skip_special_tokens=True)
        if self.heal:  # hidden, and no stop string is looked for inside it
            if text.startswith(self.heal):
                text = text[len(self.heal):]
            elif self.heal.startswith(text):  # still spelling it
                text = ""
        delta = self.stops.update(text, final)
        self.text = self.stops.text
        if self.stops.stopped and not self.done:
            self._finish("stop")
        return delta

    def cancel_now(self) -> None:
        self.cancel.set()

    @property
    def usage(self) -> dict:
        end = self.t_end or time.perf_counter()
        ttft = (self.t_first - self.t_start) if self.t_first else None
        decoded = max(0, len(self.generated) - 1)
        span = end - self.t_first if self.t_first else 0.0
        return {
            "prompt_tokens": len(self.prompt_ids),
            "cached_prompt_tokens": self.reused,
            "tokens": len(self.generated),
            "ttft_s": round(ttft, 4) if ttft is not None else None,
            "tok_per_s": round(decoded / span, 2) if span > 0 and decoded else 0.0,
            "total_s": round(end - self.t_start, 4),
        }


class Stream:
    """Iterate for text deltas; ``usage`` and ``finish_reason`` are final after the loop."""

    def __init__(self, decoder: Decoder):
        self.decoder = decoder

    def __iter__(self) -> Iterator[str]:
        while not self.decoder.done:
            delta = self.decoder.step()
            if delta:
                yield delta

    @property
    def usage(self) -> dict:
        return self.decoder.usage

    @property
    def finish_reason(self) -> str | None:
        return self.decoder.finish_reason

    @property
    def text(self) -> str:
        return self.decoder.text


class Engine:
    """A loaded model plus its chat format; makes Decoders and Streams."""

    def __init__(self, loaded: LoadedModel, chat_format: ChatFormat | None = None,
                 prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES):
        self.loaded = loaded
        self.model = loaded.model
        self.runner = loaded.runner
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.context_window = loaded.context_window
        self.chat_format = chat_format or chat_format_for(loaded.tokenizer, model_name=loaded.name)
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self.eos_ids = set(self.runner.eos_ids)
        self._token_texts: list[str] | None = None
        self._heal_cache: dict[str, list[int]] = {}
        self._dry_breakers: tuple[int, frozenset[int]] | None = None
        self.dry = True  # repetition control for chats (model.runtime.repetition); False: off

    def step_batch(self, decoders: Sequence[Decoder]) -> list[str]:
        """One decode step for several requests in a single forward pass.

        Per-token cost on small models is mostly reading the weights, so four requests in
        one pass cost little more than one. Each request keeps its own cache (and can
        finish, be cancelled or join the prefix store on its own).
        """
        import torch

        if len(decoders) == 1:
            return [decoders[0].step()]
        with torch.inference_mode():
            for d in decoders:
                d.fed.append(d.generated[-1])
            logits = self.runner.decode_batch([d.generated[-1] for d in decoders], [d.cache for d in decoders])
        return [d._accept(logits[i]) for i, d in enumerate(decoders)]

    def clear_prefix_cache(self) -> None:
        self.prefix_cache.clear()

    def decoder(self, prompt_ids: Sequence[int], params: GenerationParams | dict | None = None,
                cancel: threading.Event | None = None, stop_ids: Sequence[int] = (), heal: str = "",
                dry: bool | None = None) -> Decoder:
        if not isinstance(params, GenerationParams):
            params = GenerationParams.from_dict(params)
        if not prompt_ids:
            raise ValueError("The prompt is empty: give at least one message or token.")
        dry = self.dry if dry is None else dry
        return Decoder(self, prompt_ids, params, cancel, self.chat_format.stop_strings, stop_ids, heal, dry)

    def token_texts(self, size: int) -> list[str]:
        """The text of each of the logits' ``size`` token ids (special tokens and ids past the
        tokenizer's vocabulary empty), built once: for token healing."""
        if self._token_texts is None or len(self._token_texts) != size:
            known = len(self.tokenizer.get_vocab())
            self._token_texts = [self.tokenizer.decode([i], skip_special_tokens=True) if i < known else ""
                                 for i in range(size)]
            self._heal_cache.clear()
        return self._token_texts

    def dry_breaker_ids(self, size: int) -> frozenset[int]:
        """Token ids whose text holds a DRY sequence breaker (``model.runtime.repetition``)."""
        if self._dry_breakers is None or self._dry_breakers[0] != size:
            ids = frozenset(i for i, text in enumerate(self.token_texts(size)) if any(b in text for b in DRY_BREAKERS))
            self._dry_breakers = (size, ids)
        return self._dry_breakers[1]

    def heal_candidates(self, left: str, size: int) -> list[int]:
        """Token ids that may come next while an answer must still start with ``left``."""
        from ..prompt.fim import heal_candidates

        texts = self.token_texts(size)
        if left not in self._heal_cache:
            if len(self._heal_cache) > 256:
                self._heal_cache.clear()
            self._heal_cache[left] = heal_candidates(texts, left)
        return self._heal_cache[left]

    def generate(self, messages: Sequence[dict] | Sequence[int], params: GenerationParams | dict | None = None,
                 cancel: threading.Event | None = None) -> Stream:
        """Stream the answer to ``messages`` (or to ready prompt ids)."""
        if messages and isinstance(messages[0], dict):
            prompt_ids = self.chat_format.encode(messages)  # type: ignore[arg-type]
        else:
            prompt_ids = list(messages)  # type: ignore[arg-type]
        return Stream(self.decoder(prompt_ids, params, cancel))
