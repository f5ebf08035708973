"""Running a GGUF file on llama.cpp and a folder on torch, greedily, for the export tests.

Both sides get the same prompt as token ids and report the ids they chose with the log
probability of each; llama.cpp's tokenizer is reached through its own ``/tokenize`` endpoint
on the loopback listener the server opens.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

STEPS = 32


@contextlib.contextmanager
def llama_cpp(path: str | Path, adapters: Sequence[tuple[str | Path, float]] = (),
              n_ctx: int = 512, n_parallel: int = 1, **settings: Any) -> Iterator[Any]:
    """A llama.cpp server on ``path`` (adapters: (file, scale) loaded with it; ``settings``:
    more ``CommonParams`` fields); stopped after."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = n_ctx
    params.n_parallel = n_parallel
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1
    loras = []
    for file, scale in adapters:
        info = xllamacpp.CommonAdapterLoraInfo()
        info.path, info.scale = str(file), float(scale)
        loras.append(info)
    params.lora_adapters = loras
    for name, value in settings.items():
        setattr(params, name, value)
    server = xllamacpp.Server(params)
    try:
        yield server
    finally:
        del server


def post(server: Any, route: str, body: dict) -> dict:
    """A request to llama.cpp's own endpoints (``/completion``, ``/tokenize``) on its loopback listener."""
    request = urllib.request.Request(f"{server.listening_address}{route}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.loads(reply.read())


def greedy_llama_cpp(server: Any, ids: Sequence[int], steps: int = STEPS,
                     lora: list[dict] | None = None) -> tuple[list[int], dict[int, float]]:
    """(token ids, {position: log probability}) of a greedy answer to the prompt ``ids``.

    Through llama.cpp's native ``/completion``: its OpenAI-style logprobs leave out a token
    whose text is an incomplete UTF-8 sequence, so the ids come from ``return_tokens``, and
    the log probabilities (which skip such tokens too) are matched to their positions.
    """
    body: dict[str, Any] = {"prompt": [int(i) for i in ids], "n_predict": steps, "temperature": 0.0,
                            "n_probs": 1, "return_tokens": True, "cache_prompt": False}
    if lora is not None:
        body["lora"] = lora
    reply = post(server, "/completion", body)
    tokens, logprobs, probs = reply["tokens"], {}, iter(reply["completion_probabilities"])
    entry = next(probs, None)
    for i, token in enumerate(tokens):
        if entry is not None and entry["id"] == token:
            logprobs[i] = entry["logprob"]
            entry = next(probs, None)
    return tokens, logprobs


def torch_choices(model: Any, ids: Sequence[int], answer: Sequence[int]) -> tuple[list[int], list[list[float]]]:
    """What a transformers model chooses greedily after ``ids`` + each prefix of ``answer``,
    and its log probabilities at each of those positions, in one forward pass.

    Equal choices at every position mean greedy decoding on torch gives ``answer`` itself
    (teacher forcing: the same inputs, one batch instead of one call per token).
    """
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([[*ids, *answer]])).logits[0, len(ids) - 1: len(ids) + len(answer) - 1]
    logp = logits.float().log_softmax(-1)
    return logp.argmax(-1).tolist(), logp.tolist()


def check_greedy(model: Any, server: Any, ids: Sequence[int], stop: set[int], tolerance: float,
                 lora: list[dict] | None = None, max_ties: int = 1) -> list[int]:
    """llama.cpp's greedy answer is torch's: the same token at each of ``STEPS`` steps (or up to
    an end-of-turn id torch stops at too), log probabilities within ``tolerance``.

    A different choice passes only at a near-tie, where torch rates llama.cpp's token within
    ``tolerance`` of its own best (float rounding decides those; random tiny models have flat
    distributions), and at most ``max_ties`` times; past it, both go on along llama.cpp's path.
    """
    got, got_lp = greedy_llama_cpp(server, ids, lora=lora)
    assert got and (len(got) == STEPS or got[-1] in stop), got
    want, logp = torch_choices(model, ids, got)
    ties = [i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b]
    assert len(ties) <= max_ties, (got, want)
    for i in ties:
        assert logp[i][want[i]] - logp[i][got[i]] < tolerance, (i, got, want)
    assert len(got_lp) >= len(got) // 2 and max(abs(logp[i][got[i]] - lp) for i, lp in got_lp.items()) < tolerance
    return got


def eos_ids(folder: str | Path) -> set[int]:
    """The ids that end an answer for the folder (its generation config's eos)."""
    path = Path(folder) / "generation_config.json"
    eos = json.loads(path.read_text()).get("eos_token_id") if path.is_file() else None
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


def tokenize(server: Any, text: str) -> list[int]:
    """llama.cpp's own tokenization of ``text`` (special-token strings parsed as such)."""
    return post(server, "/tokenize", {"content": text, "add_special": False, "parse_special": True})["tokens"]


def gguf_fields(path: str | Path, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """The key/values of a GGUF file (arrays as their length unless named in ``keep``) and
    ``tensor_types`` (name -> type name), read by the worker's own header reader."""
    import gguf

    from model.runtime.gguf_meta import read_header

    fields, tensors = read_header(path, keep, tensors=True)
    fields["tensor_types"] = {name: gguf.GGMLQuantizationType(kind).name for name, (_, kind) in tensors.items()}
    return fields
