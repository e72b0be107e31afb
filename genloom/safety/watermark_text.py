"""Text watermark: the green-list scheme of Kirchenbauer et al. (2023), "A Watermark for Large Language Models".

At each step the previous token seeds a generator that splits the vocabulary: a fraction gamma of it is
"green" and gets +delta on its logits. A detector that knows the key counts green tokens and reports a
one-sided z-score against the gamma a text written without the key would show.

Seeding follows transformers' `WatermarkLogitsProcessor` (seeding_scheme "lefthash", context width 1):
torch's CPU generator seeded with `hash_key * previous_token % (2**64 - 1)`, then `randperm(vocab)[:int(vocab *
gamma)]`. genloom's `hash_key` is derived from the installation's secret (HMAC-SHA256, see `hash_key`), so
transformers' `WatermarkDetector` given `hashing_key=hash_key(secret)` finds the same green lists (the parity test).
Green lists are always drawn on the CPU, so a text generated on a GPU is detected anywhere. One deviation:
that seed is 0 for a previous token of id 0 whatever the key, so its green list is public and the same for
every installation (and id 0 is end-of-text in genloom's BPE tokenizers and the newline of the tang
starter: frequent). genloom neither biases nor scores the token after id 0; every other pair is exactly
transformers' (tests/test_watermark.py compares them).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

import torch

GAMMA = 0.25
DELTA = 2.0
Z_THRESHOLD = 4.0
UNSEEDED = 0  # the previous token whose seed (hash_key * 0) ignores the key: its next token is not marked or scored


def hash_key(secret: bytes) -> int:
    """The 63-bit integer transformers calls `hashing_key`, derived from the installation's secret."""
    digest = hmac.new(secret, b"genloom text watermark v1", hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1 or 1


@lru_cache(maxsize=1024)  # at GPT-2's 50,257 tokens about 100 MB at most; genloom's starters' lists are tiny
def green_ids(key: int, vocab: int, gamma: float, prev: int) -> torch.Tensor:
    """The green token ids after `prev` (transformers' lefthash with context width 1; CPU generator)."""
    g = torch.Generator().manual_seed((key * prev) % (2**64 - 1))
    return torch.randperm(vocab, generator=g)[: int(vocab * gamma)]


@dataclass(frozen=True)
class TextWatermark:
    """The settings one generation or detection uses; `key` is hash_key(secret), never logged."""

    key: int
    vocab: int
    gamma: float = GAMMA
    delta: float = DELTA

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"TextWatermark(vocab={self.vocab}, gamma={self.gamma}, delta={self.delta})"

    def processor(self) -> GreenListProcessor:
        return GreenListProcessor(self)

    def is_green(self, prev: int, tok: int) -> bool:
        return bool((green_ids(self.key, self.vocab, self.gamma, prev) == tok).any())


class GreenListProcessor:
    """A `(counts, logits) -> logits` processor adding delta to each row's green list; stateful: the decoding
    loop tells it each row's previous token (`observe`, first the prompts' last tokens) and which rows stay
    (`select`), as genloom.sample's stream_ids and the server's engine do."""

    def __init__(self, wm: TextWatermark):
        self.wm = wm
        self.prev: list[int] = []

    def observe(self, tokens) -> None:
        self.prev = [int(t) for t in (tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens)]

    def select(self, keep) -> None:
        self.prev = [p for p, k in zip(self.prev, keep.tolist()) if k]

    def __call__(self, counts, logits: torch.Tensor) -> torch.Tensor:
        wm = self.wm
        if len(self.prev) != logits.shape[0] or logits.shape[1] != wm.vocab:
            raise RuntimeError(f"watermark: {len(self.prev)} previous tokens and a vocabulary of {wm.vocab} for "
                               f"logits of shape {tuple(logits.shape)}")
        bias = torch.zeros(logits.shape, dtype=logits.dtype)  # (B, V) on the CPU, where the green lists are
        marked = [(i, p) for i, p in enumerate(self.prev) if p != UNSEEDED]
        if len(marked) == 1:
            i, p = marked[0]
            bias[i, green_ids(wm.key, wm.vocab, wm.gamma, p)] = wm.delta
        elif marked:  # every row's list in one indexed write (a batch of 16: 0.25 -> 0.1 ms); lists are equally long
            rows = torch.tensor([i for i, _ in marked]).unsqueeze(1)  # (k, 1)
            bias[rows, torch.stack([green_ids(wm.key, wm.vocab, wm.gamma, p) for _, p in marked])] = wm.delta
        return logits + bias.to(logits.device)


def score_ids(ids: list[int], wm: TextWatermark, *, ignore_repeated: bool = True) -> dict:
    """z-score of a token sequence (no prompt): each token after the first scored against its predecessor's green
    list. ignore_repeated counts each (previous, token) pair once (transformers' `ignore_repeated_ngrams`, the
    authors' detector option): repeated phrases would otherwise count many times over."""
    return score_pairs(list(pairwise(ids)), wm, ignore_repeated=ignore_repeated)


def score_pairs(pairs: list[tuple[int, int]], wm: TextWatermark, *, ignore_repeated: bool = True) -> dict:
    """score_ids on (previous, token) pairs (segments of a text joined without pairs across their seams); pairs after
    the UNSEEDED token are not scored (their green list does not depend on the key)."""
    pairs = [pt for pt in pairs if pt[0] != UNSEEDED]
    scored = list(Counter(pairs)) if ignore_repeated else pairs
    n = len(scored)
    green = sum(1 for p, t in scored if wm.is_green(p, t))
    if n == 0:
        return {"z": 0.0, "p_value": 1.0, "green_fraction": None, "tokens_scored": 0, "green_tokens": 0,
                "detected": False, "gamma": wm.gamma, "ignore_repeated": ignore_repeated, "threshold": Z_THRESHOLD}
    z = (green - wm.gamma * n) / math.sqrt(n * wm.gamma * (1 - wm.gamma))
    return {"z": round(z, 4), "p_value": 0.5 * math.erfc(z / math.sqrt(2)), "green_fraction": round(green / n, 4),
            "tokens_scored": n, "green_tokens": green, "detected": z > Z_THRESHOLD, "gamma": wm.gamma,
            "ignore_repeated": ignore_repeated, "threshold": Z_THRESHOLD}


def segments(text: str, tokenizer) -> list[list[int]]:
    """The text's token ids; a character-level tokenizer's unknown characters (which its model cannot have
    written) split the text into segments instead of failing."""
    known = getattr(tokenizer, "stoi", None)
    if known is None:
        return [tokenizer.encode(text)]
    parts, cur = [], []
    for ch in text:
        if ch in known:
            cur.append(ch)
        elif cur:
            parts.append("".join(cur))
            cur = []
    return [tokenizer.encode(p) for p in parts + (["".join(cur)] if cur else [])]


def detect_text(text: str, tokenizer, wm: TextWatermark, *, ignore_repeated: bool = True) -> dict:
    """Tokenise with the model's tokenizer, then score every (previous, token) pair."""
    pairs = [pair for seg in segments(text, tokenizer) for pair in pairwise(seg)]
    return {"kind": "text", "method": "kirchenbauer2023-lefthash",
            **score_pairs(pairs, wm, ignore_repeated=ignore_repeated)}
