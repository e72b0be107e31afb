"""A multi-label text classifier on precomputed features: sentence embeddings (MiniLM; USE multilingual), hashed
character n-grams (a fastText-style bag, Joulin et al. 2017) and curated-term counts, joined by a small MLP.

Inputs are (dense, ngrams): dense (B, embed_dim + extra_dim) floats, ngrams (B, L) int64 ids, 0 = padding.
One logit per label; trained with binary cross-entropy (independent sigmoids, several labels may hold).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(kw_only=True)
class TextClassifierConfig:
    labels: list = field(default_factory=list)  # the label names, in logit order
    encoders: list = field(default_factory=lambda: ["minilm"])  # sentence encoders (genloom.embeddings.ENCODERS)
    embed_dim: int = 384  # their embeddings' sizes summed (all-MiniLM-L6-v2: 384; use-m3: 512)
    extra_dim: int = 0  # further dense features after the embedding (curated-term counts first, then concepts)
    buckets: int = 65536  # hashed n-gram buckets (id 0 is padding)
    ngram_dim: int = 64
    hidden: int = 256  # 0: a linear head (logistic regression on the features)
    dropout: float = 0.1
    term_prior: float = 3.0  # initial weight from a category's curated-term count to its own logit
    ngram_dropout: float = 0.3  # training: this share of a text's n-gram ids is dropped (word dropout)


class TextClassifier(nn.Module):
    def __init__(self, config: TextClassifierConfig):
        super().__init__()
        self.config = c = config
        self.ngrams = nn.EmbeddingBag(c.buckets, c.ngram_dim, mode="mean", padding_idx=0)
        nn.init.zeros_(self.ngrams.weight)  # an n-gram never seen in training says nothing (random rows made "嗨" harm)
        self.direct = nn.EmbeddingBag(c.buckets, len(c.labels), mode="sum", padding_idx=0)  # fastText's linear path
        nn.init.zeros_(self.direct.weight)
        self.extra = nn.Linear(c.extra_dim, len(c.labels), bias=False) if c.extra_dim else None  # term counts -> logits
        if self.extra is not None and c.extra_dim >= len(c.labels):  # a prior: a term of a category speaks for it
            nn.init.zeros_(self.extra.weight)  # (the first len(labels) extra features are the term counts)
            with torch.no_grad():
                self.extra.weight[:, :len(c.labels)].fill_diagonal_(c.term_prior)
        n_in = c.embed_dim + c.extra_dim + c.ngram_dim
        self.mlp = (nn.Sequential(nn.Linear(n_in, c.hidden), nn.GELU(), nn.Dropout(c.dropout), nn.Linear(c.hidden, len(c.labels)))
                    if c.hidden else nn.Sequential(nn.Dropout(c.dropout), nn.Linear(n_in, len(c.labels))))  # 0: linear

    def forward(self, x, targets: torch.Tensor | None = None):
        dense, ids = x  # (B, embed_dim + extra_dim), (B, L)
        c = self.config
        if self.training and c.ngram_dropout:
            ids = ids.masked_fill(torch.rand(ids.shape, device=ids.device) < c.ngram_dropout, 0)
        n = (ids > 0).sum(-1, keepdim=True).clamp(min=1)  # (B, 1)
        bag = self.ngrams(ids)  # (B, ngram_dim): the mean of the non-padding ids
        logits = self.mlp(torch.cat([dense, bag], dim=-1))  # (B, labels)
        logits = logits + self.direct(ids) / n.sqrt()  # (B, labels)
        if self.extra is not None:
            logits = logits + self.extra(dense[:, c.embed_dim:])
        loss = F.binary_cross_entropy_with_logits(logits, targets) if targets is not None else None
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float]):
        """AdamW; weight decay on the linear weights only (not the n-gram table, biases)."""
        decay = [p for n, p in self.named_parameters() if p.dim() >= 2 and not n.startswith("ngrams")]
        rest = [p for n, p in self.named_parameters() if not (p.dim() >= 2 and not n.startswith("ngrams"))]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
