"""A count-based n-gram Markov chain over token ids: the baseline a sequence model must beat.

Interpolated absolute discounting (Ney, Essen & Kneser 1994, "On structuring probabilistic dependences in
stochastic language modelling"): with h the last k tokens,

    P_k(w | h) = (max(c(h w) - D_k, 0) + D_k * N1+(h .) * P_{k-1}(w | h')) / c(h)     when c(h) > 0
    P_k(w | h) = P_{k-1}(w | h')                                                       otherwise

down to P_{-1} = 1 / V, the uniform distribution over the vocabulary, so every token of held-out data has
a finite negative log-likelihood. D_k = n1 / (n1 + 2 n2) from the order's counts of counts (Ney et al.'s
estimate); lower orders use plain counts (no Kneser-Ney continuation counts). Counting and scoring are
vectorised: an n-gram is one int64 code, looked up with np.searchsorted.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from genloom.errors import GenloomError


class MarkovChain:
    """An order-n chain (the next token given the n previous ones), fitted on one token stream."""

    def __init__(self, order: int, vocab_size: int):
        if order < 1:
            raise GenloomError(f"a Markov chain's order must be >= 1, got {order}")
        if vocab_size < 2 or vocab_size ** (order + 1) >= 2 ** 62:
            raise GenloomError(f"vocabulary of {vocab_size} tokens is out of range for an order-{order} chain")
        self.order, self.vocab_size = order, vocab_size
        self.tables: list[dict] = []  # per history length k = 0..order

    def _codes(self, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """History codes (the k tokens before position i) and n-gram codes for every position i >= k."""
        n, V = len(ids), self.vocab_size
        hist = np.zeros(n - k, np.int64)
        for j in range(k):
            hist = hist * V + ids[j: n - k + j]
        return hist, hist * V + ids[k:]

    def fit(self, ids) -> MarkovChain:
        ids = np.asarray(ids, np.int64)
        if len(ids) <= self.order:
            raise GenloomError(f"{len(ids)} training tokens are too few for an order-{self.order} chain")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise GenloomError(f"token ids must lie in [0, {self.vocab_size})")
        self.tables = []
        for k in range(self.order + 1):
            hist, gram = self._codes(ids, k)
            grams, counts = np.unique(gram, return_counts=True)
            hists, totals = np.unique(hist, return_counts=True)
            types = np.bincount(np.searchsorted(hists, grams // self.vocab_size), minlength=len(hists))
            n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
            discount = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
            self.tables.append({"grams": grams, "counts": counts, "hists": hists, "totals": totals,
                                "types": types, "discount": discount})
        return self

    @staticmethod
    def _lookup(keys: np.ndarray, values: np.ndarray, q: np.ndarray) -> np.ndarray:
        idx = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return np.where(keys[idx] == q, values[idx], 0)

    def _prob(self, hists_by_k: list[np.ndarray], nexts: np.ndarray, valid_by_k: list[np.ndarray]) -> np.ndarray:
        """P(next | history) for a batch: hists_by_k[k] holds each query's last-k-token history code."""
        p = np.full(len(nexts), 1.0 / self.vocab_size)
        for k, t in enumerate(self.tables):
            h = hists_by_k[k]
            total = self._lookup(t["hists"], t["totals"], h).astype(float)
            types = self._lookup(t["hists"], t["types"], h).astype(float)
            count = self._lookup(t["grams"], t["counts"], h * self.vocab_size + nexts).astype(float)
            seen = (total > 0) & valid_by_k[k]
            d = t["discount"]
            mix = (np.maximum(count - d, 0) + d * types * p) / np.where(seen, total, 1)
            p = np.where(seen, mix, p)
        return p

    def token_nll(self, ids) -> np.ndarray:
        """-log P(ids[i] | the up to `order` tokens before it) in nats, for i = 1 .. len(ids) - 1 (the first
        token, with no history, is not scored: the protocol of genloom.metrics.text.perplexity)."""
        if not self.tables:
            raise GenloomError("fit the Markov chain before scoring")
        ids = np.asarray(ids, np.int64)
        n = len(ids)
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise GenloomError(f"token ids must lie in [0, {self.vocab_size})")
        pos = np.arange(1, n)
        hists, valid = [], []
        for k in range(self.order + 1):
            h = np.zeros(n - 1, np.int64)
            for j in range(k, 0, -1):  # the k tokens before position i, oldest first
                h = h * self.vocab_size + ids[np.maximum(pos - j, 0)]
            hists.append(h)
            valid.append(pos >= k)
        return -np.log(self._prob(hists, ids[1:], valid))

    def nll(self, ids) -> dict:
        """Mean NLL per token (nats and bits) over a held-out stream, with its protocol."""
        nats = self.token_nll(ids)
        mean = float(nats.mean())
        return {"nll_nats_per_token": mean, "bits_per_token": mean / math.log(2), "perplexity": math.exp(mean),
                "tokens_scored": int(len(nats)),
                "protocol": f"order-{self.order} Markov chain, interpolated absolute discounting (D per order: "
                            + ", ".join(f"{t['discount']:.3f}" for t in self.tables)
                            + f") down to uniform over {self.vocab_size} tokens; every token after the first "
                              f"scored with up to {self.order} tokens of history"}

    def next_distribution(self, history) -> np.ndarray:
        """P(w | history) for every token w of the vocabulary."""
        V = self.vocab_size
        hist = list(history)[-self.order:] if self.order else []
        hists, valid = [], []
        for k in range(self.order + 1):
            code = 0
            for tok in hist[len(hist) - k:] if k else []:
                code = code * V + int(tok)
            hists.append(np.full(V, code, np.int64))
            valid.append(np.full(V, k <= len(hist)))
        p = self._prob(hists, np.arange(V, dtype=np.int64), valid)
        return p / p.sum()

    def sample(self, prompt, max_new_tokens: int, *, seed: int = 0, temperature: float = 1.0,
               stop: set[int] | frozenset = frozenset()) -> list[int]:
        """Ancestral sampling (a torch.Generator seeded with `seed`): same seed, same tokens."""
        gen = torch.Generator().manual_seed(seed)
        out = list(prompt)
        for _ in range(max_new_tokens):
            p = torch.from_numpy(self.next_distribution(out))
            if temperature != 1.0:
                p = p.clamp_min(1e-300) ** (1.0 / temperature)
            tok = int(torch.multinomial(p / p.sum(), 1, generator=gen))
            out.append(tok)
            if tok in stop:
                break
        return out[len(prompt):]
