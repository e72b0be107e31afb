"""A small image classifier whose penultimate layer is genloom's feature network for FID/KID/IS/PR.

No Inception weights install offline, so genloom trains this network itself (on Fashion-MNIST or
MNIST-5k) and computes image metrics on its `features`. A VGG-style stack: three stages of two 3x3
conv + BatchNorm + GELU, 2x2 max-pool between stages, global average pool, a `feature_dim` embedding,
then the class head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(kw_only=True)
class ClassifierConfig:
    image_size: int = 28
    channels: int = 1
    num_classes: int = 10
    width: int = 32  # channels of the first stage; doubled at each of the three stages
    feature_dim: int = 128
    dropout: float = 0.1


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU(),
    )


class Classifier(nn.Module):
    fsdp_methods = ()  # FSDP2 shards each stage, then the whole; training calls forward alone

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = c = config
        w = c.width
        self.stages = nn.ModuleList([_stage(c.channels, w), _stage(w, 2 * w), _stage(2 * w, 4 * w)])
        self.embed = nn.Linear(4 * w, c.feature_dim)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.feature_dim, c.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images, float in [0, 1], (B, C, H, W) -> (B, feature_dim) embeddings (the FID features)."""
        x = (x - 0.5) / 0.5
        for i, stage in enumerate(self.stages):
            x = stage(x)  # (B, w * 2**i, H / 2**i, W / 2**i)
            if i < len(self.stages) - 1:
                x = F.max_pool2d(x, 2)
        x = x.mean(dim=(2, 3))  # (B, 4w)
        return F.gelu(self.embed(x))  # (B, feature_dim)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.head(self.drop(self.features(x)))  # (B, num_classes)
        loss = F.cross_entropy(logits, targets) if targets is not None else None
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float]):
        """AdamW; weight decay on conv/linear weights only (not norms or biases)."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)

    @staticmethod
    def flops_per_image(config: ClassifierConfig) -> int:
        """Forward multiply-adds x 2 of the conv stack (for throughput reports)."""
        c, s, total = config.channels, config.image_size, 0
        for i in range(3):
            w = config.width * 2**i
            total += 2 * 9 * s * s * (c * w + w * w)
            c, s = w, math.ceil(s / 2)
        return total
