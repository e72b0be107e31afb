"""The n-gram Markov baseline against a brute-force dictionary implementation of the same formula."""

import math
from collections import Counter

import numpy as np
import pytest

from genloom.errors import GenloomError
from genloom.models.markov import MarkovChain


def brute_prob(train, order, V, history, w):
    """Interpolated absolute discounting written out with Counters (the module docstring's formula)."""
    p = 1.0 / V
    for k in range(order + 1):
        if k > len(history):
            break
        grams = Counter(tuple(train[i - k: i + 1]) for i in range(k, len(train)))
        counts = Counter(grams.values())
        d = counts[1] / (counts[1] + 2 * counts[2]) if counts[1] + counts[2] else 0.5
        h = tuple(history[len(history) - k:]) if k else ()
        total = sum(c for g, c in grams.items() if g[:-1] == h)
        if total == 0:
            continue
        types = sum(1 for g in grams if g[:-1] == h)
        p = (max(grams[h + (w,)] - d, 0) + d * types * p) / total
    return p


@pytest.mark.parametrize("order", [1, 2, 3])
def test_matches_brute_force(order):
    rng = np.random.default_rng(order)
    V = 6
    train = list(rng.integers(0, V - 1, 300))  # token V-1 never occurs in training
    held = [int(x) for x in rng.integers(0, V, 40)]
    m = MarkovChain(order, V).fit(train)
    nats = m.token_nll(held)
    for i in range(1, len(held)):
        want = brute_prob(train, order, V, held[max(0, i - order): i], held[i])
        assert math.exp(-nats[i - 1]) == pytest.approx(want, rel=1e-9)
    assert np.isfinite(nats).all()


def test_distribution_sums_to_one_and_agrees_with_scoring():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 9, 500)
    m = MarkovChain(3, 10).fit(train)
    seq = [1, 4, 4, 2]
    p = m.next_distribution(seq[:3])
    assert p.sum() == pytest.approx(1.0) and (p > 0).all()
    assert -math.log(p[seq[3]]) == pytest.approx(m.token_nll(seq)[-1])


def test_learns_a_deterministic_pattern():
    pattern = [0, 1, 2, 1] * 200  # after (0, 1) comes 2, after (2, 1) comes 0: order 2 is certain
    assert MarkovChain(2, 5).fit(pattern).nll(pattern)["nll_nats_per_token"] < 0.05
    assert MarkovChain(1, 5).fit(pattern).nll(pattern)["nll_nats_per_token"] > 0.3  # 1 is followed by 2 or 0


def test_sampling_is_seeded():
    m = MarkovChain(2, 8).fit(np.random.default_rng(0).integers(0, 8, 400))
    a, b = m.sample([1, 2], 50, seed=3), m.sample([1, 2], 50, seed=3)
    assert a == b and len(a) == 50 and a != m.sample([1, 2], 50, seed=4)
    assert m.sample([1], 50, seed=0, stop={m.sample([1], 1, seed=0)[0]}) == m.sample([1], 1, seed=0)


def test_bad_input():
    with pytest.raises(GenloomError, match="order"):
        MarkovChain(0, 5)
    with pytest.raises(GenloomError, match="token ids"):
        MarkovChain(1, 5).fit([0, 1, 7])
    with pytest.raises(GenloomError, match="fit"):
        MarkovChain(1, 5).token_nll([0, 1])
