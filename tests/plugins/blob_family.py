"""A model family that exists only in the tests: proof that a new family is a model, a task and one record.

"blob" learns the mean image of its data and samples it plus seeded Gaussian noise (image i from seed + i).
Nothing in genloom names it: the CLI finds it through GENLOOM_PLUGINS=blob_family, the tests by importing it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom import cards, families
from genloom.objectives import ImageTask


@dataclass(kw_only=True)
class BlobConfig:
    image_size: int = 8
    channels: int = 1
    noise: float = 0.05


class Blob(nn.Module):
    def __init__(self, config: BlobConfig):
        super().__init__()
        self.config = config
        self.mean = nn.Parameter(torch.zeros(config.channels, config.image_size, config.image_size))

    def forward(self, x, targets=None):
        loss = F.mse_loss(self.mean.expand_as(x), x)
        return self.mean, loss

    def configure_optimizer(self, weight_decay, lr, betas):
        return torch.optim.AdamW(self.parameters(), lr=lr, betas=betas, weight_decay=0.0)

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None, **_) -> torch.Tensor:
        seed = 0 if seed is None else seed
        noise = torch.stack([torch.randn(self.mean.shape, generator=torch.Generator().manual_seed(seed + i))
                             for i in range(n)])
        return ((self.mean + self.config.noise * noise).clamp(0, 1) * 255).round().to(torch.uint8)


class BlobTask(ImageTask):
    pixel_range = (0.0, 1.0)

    def batch(self, split, gen):
        ix = torch.randint(len(self.splits[split]), (self.batch_size,), generator=gen)
        return (self.pixels(split, ix),)

    def loss(self, model, batch):
        return model(batch[0])[1]


FAMILY = families.register(families.Family("blob", "image", BlobConfig, Blob, BlobTask, cards.image_card,
                                           loss_name="MSE to the mean image"))
