"""The unbiased pass@k estimator against known and brute-force values."""

import itertools
import math

import pytest

from training.evaluation.humaneval import pass_at_k, score


def test_known_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))  # 0.9166..
    assert pass_at_k(10, 3, 5) == pytest.approx(11 / 12)
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 5) == 1.0
    assert pass_at_k(10, 8, 3) == 1.0  # fewer than k failures: some draw always passes
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)


def test_matches_exhaustive_enumeration():
    # pass@k = probability that a random k-subset of n samples holds at least one pass.
    for n, c, k in [(6, 2, 3), (7, 1, 2), (5, 3, 2), (8, 4, 4)]:
        samples = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(samples, k))
        exact = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(exact)


def test_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_score_averages_per_problem():
    rows = [
        {"task_id": "a", "passed": True, "status": "passed"},
        {"task_id": "a", "passed": False, "status": "failed"},
        {"task_id": "b", "passed": False, "status": "timeout"},
        {"task_id": "b", "passed": False, "status": "failed"},
    ]
    result = score(rows, ks=(1, 2))
    assert result["pass@1"] == pytest.approx(0.25)
    assert result["pass@2"] == pytest.approx(0.5)
    assert result["statuses"] == {"passed": 1, "failed": 2, "timeout": 1}
    assert result["problems"] == 2 and result["samples"] == 4
