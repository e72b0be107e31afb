"""Decoding processors against transformers' logits processors (the reference) on random logits.

`temperature` multiplying instead of dividing once passed every test: the sampling tests use seeds and
compare runs with themselves, and the known-value test covered only top-k, top-p and min-p.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

from genloom.sample import min_p, repetition_penalty, temperature, top_k, top_p

V = 50


@pytest.fixture
def logits():
    return torch.randn(4, V, generator=torch.Generator().manual_seed(0)) * 3  # (B, V), no ties


@pytest.mark.parametrize("t", [0.3, 0.7, 1.5, 4.0])
def test_temperature(logits, t):
    ours = temperature(t)(None, logits)
    torch.testing.assert_close(ours, TemperatureLogitsWarper(t)(None, logits.clone()))
    flat = (ours.softmax(-1).max(-1).values < logits.softmax(-1).max(-1).values)
    assert bool(flat.all()) == (t > 1)  # a higher temperature flattens the distribution


@pytest.mark.parametrize("k", [1, 5, 20, V])
def test_top_k(logits, k):
    assert torch.equal(top_k(k)(None, logits), TopKLogitsWarper(k)(None, logits.clone()))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_top_p(logits, p):
    ours = torch.isinf(top_p(p)(None, logits))
    ref = torch.isinf(TopPLogitsWarper(p)(None, logits.clone()))
    assert torch.equal(ours, ref), (ours.sum(-1), ref.sum(-1))


@pytest.mark.parametrize("p", [0.05, 0.2, 0.6])
def test_min_p(logits, p):
    ours = torch.isinf(min_p(p)(None, logits))
    assert torch.equal(ours, torch.isinf(MinPLogitsWarper(p)(None, logits.clone())))


@pytest.mark.parametrize("penalty", [0.8, 1.3, 2.0])
def test_repetition_penalty(logits, penalty):
    seen = torch.randint(0, V, (4, 12), generator=torch.Generator().manual_seed(1))  # (B, T) earlier tokens
    counts = torch.zeros(4, V, dtype=torch.long).scatter_add_(1, seen, torch.ones_like(seen))
    ours = repetition_penalty(penalty)(counts, logits)
    torch.testing.assert_close(ours, RepetitionPenaltyLogitsProcessor(penalty)(seen, logits.clone()))
