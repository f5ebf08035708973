"""model.runtime.sampling gives the same scores and tokens as transformers' logits processors.

The reference is the processor list the engine used to build (repetition penalty, then
temperature, top-k and top-p when sampling) followed by the engine's own choice: argmax
when greedy, otherwise fp32 softmax and ``torch.multinomial`` on a [1, vocab] batch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from model.runtime.sampling import Sampler

VOCAB = 1000
SEEDS = [0, 1, 2, 3, 4]


def params(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, seed=None):
    return SimpleNamespace(temperature=temperature, top_p=top_p, top_k=top_k,
                           repetition_penalty=repetition_penalty, seed=seed)


def reference_processors(p):
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if p.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(float(p.repetition_penalty)))
    if p.temperature > 0:
        procs.append(TemperatureLogitsWarper(float(p.temperature)))
        if p.top_k:
            procs.append(TopKLogitsWarper(p.top_k))
        if p.top_p < 1.0:
            procs.append(TopPLogitsWarper(p.top_p))
    return procs


def reference_process(p, logits, history):
    procs = reference_processors(p)
    batch = logits.unsqueeze(0)
    if procs:
        batch = procs(torch.tensor([list(history)]), batch)
    return batch[0]


def reference_choose(p, logits, history, generator):
    scores = reference_process(p, logits, history).unsqueeze(0)
    if p.temperature <= 0:
        return int(scores.argmax(dim=-1)[0])
    probs = torch.softmax(scores.float(), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator)[0, 0])


def random_case(seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(VOCAB, generator=g) * 3).to(dtype)
    # Repeated ids, ids with positive and negative logits, and one id past the vocab.
    history = torch.randint(0, VOCAB, (60,), generator=g).tolist()
    history += history[:10] + [int(logits.float().argmax()), int(logits.float().argmin()), VOCAB + 5]
    return logits, history


CASES = {
    "penalty": params(repetition_penalty=1.3),
    "penalty_below_one": params(repetition_penalty=0.7),
    "temperature_top_k": params(temperature=0.8, top_k=40),
    "temperature_top_p": params(temperature=0.7, top_p=0.9),
    "all": params(temperature=1.2, top_k=50, top_p=0.8, repetition_penalty=1.2),
    "top_k_over_vocab": params(temperature=1.0, top_k=VOCAB + 10, top_p=0.95),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_processed_scores_equal_transformers(name, seed, dtype):
    p = CASES[name]
    logits, history = random_case(seed, dtype)
    original = logits.clone()
    ours = Sampler(p).process(logits, history)
    assert torch.equal(logits, original)  # the input is left alone
    ref = reference_process(p, logits.clone(), history)
    assert ours.shape == (VOCAB,)
    assert ours.dtype == ref.dtype
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_greedy_penalty_pick_equals_transformers(seed):
    p = params(repetition_penalty=1.5)
    logits, history = random_case(seed)
    history.append(int(logits.argmax()))  # the plain argmax is penalised
    sampler = Sampler(p)
    token = sampler.choose(logits, history)
    assert token == reference_choose(p, logits, history, None)
    assert token == int(sampler.process(logits, history).argmax())


@pytest.mark.parametrize("seed", SEEDS)
def test_greedy_without_penalty_is_argmax(seed):
    logits, history = random_case(seed)
    assert Sampler(params()).choose(logits, history) == int(logits.argmax())


def test_greedy_without_penalty_builds_no_history_tensor(monkeypatch):
    logits, _ = random_case(0)

    def fail(*args, **kwargs):
        raise AssertionError("history turned into a tensor")

    monkeypatch.setattr(torch, "tensor", fail)
    assert Sampler(params()).choose(logits, range(VOCAB)) == int(logits.argmax())


@pytest.mark.parametrize("name", sorted(n for n, p in CASES.items() if p.temperature > 0))
def test_sampled_tokens_equal_transformers_with_same_seed(name):
    p = SimpleNamespace(**{**vars(CASES[name]), "seed": 1234})
    sampler = Sampler(p)
    generator = torch.Generator().manual_seed(1234)
    for step in range(20):
        logits, history = random_case(100 + step)
        assert sampler.choose(logits, history) == reference_choose(p, logits, history, generator)


def draws(seed, n=20):
    sampler = Sampler(params(temperature=1.0, seed=seed))
    logits, history = random_case(7)
    return [sampler.choose(logits, history) for _ in range(n)]


def test_same_seed_same_tokens_different_seed_differs():
    assert draws(42) == draws(42)
    assert draws(42) != draws(43)


@pytest.mark.parametrize("seed", SEEDS)
def test_top_k_one_is_argmax(seed):
    logits, history = random_case(seed)
    sampler = Sampler(params(temperature=1.5, top_k=1, seed=seed))
    assert all(sampler.choose(logits, history) == int(logits.argmax()) for _ in range(20))


def test_imports_without_transformers():
    code = "import sys, model.runtime.sampling; sys.exit('transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr or "model.runtime.sampling imported transformers"
