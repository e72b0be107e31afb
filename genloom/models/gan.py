"""DCGAN (Radford et al. 2016): transposed-convolution generator, strided-convolution discriminator.

The layout is the classic one (the PyTorch DCGAN tutorial's), so pretrained generators of that shape
import directly (genloom.hf-style key mapping in `import_dcgan`). Class conditioning, when num_classes > 0,
concatenates a learned label embedding to the latent (conditional GAN, Mirza & Osindero 2014).
The adversarial training maths lives in objectives, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from genloom.errors import GenloomError, choices
from genloom.optim import Optimizers


@dataclass(kw_only=True)
class DCGANConfig:
    image_size: int = 64  # a power of two >= 16
    channels: int = 3
    nz: int = 100  # latent size
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width
    num_classes: int = 0  # > 0: class-conditional
    classes: list = field(default_factory=list)  # class names, so a label can be asked for by name
    label_dim: int = 0  # the label embedding concatenated to z (0: nz); an imported one-hot generator: num_classes
    with_discriminator: bool = True  # False for an imported generator-only checkpoint
    # training (objectives.GANTask)
    objective: str = "dcgan"  # dcgan (non-saturating BCE) | wgan-gp
    d_norm: str = "auto"  # batch | layer | none; auto: batch for dcgan, layer for wgan-gp (no batch norm in a critic)
    n_critic: int = 5  # wgan-gp: critic steps per generator step
    gp_weight: float = 10.0  # wgan-gp: lambda
    fid_samples: int = 1000  # validation FID sample count (data with a bundled feature network)


class Generator(nn.Module):
    def __init__(self, c: DCGANConfig):
        super().__init__()
        n_up = int(math.log2(c.image_size)) - 3  # 4x4 -> image_size in stride-2 steps after the first block
        width = c.ngf * 2 ** n_up
        label_dim = c.label_dim or c.nz
        zin = c.nz + (label_dim if c.num_classes else 0)
        layers = [nn.ConvTranspose2d(zin, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(n_up):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, c.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.label = nn.Embedding(c.num_classes, label_dim) if c.num_classes else None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, nz) [, labels (B,)] -> images (B, C, H, W) in [-1, 1]."""
        if self.label is not None:
            z = torch.cat([z, self.label(labels)], dim=1)
        return self.net(z[:, :, None, None])


def discriminator_norm(c: DCGANConfig) -> str:
    norms = ("batch", "layer", "none")
    if c.d_norm != "auto" and c.d_norm not in norms:
        raise GenloomError(f"unknown d_norm '{c.d_norm}'; choose one of {choices(('auto',) + norms)}")
    return c.d_norm if c.d_norm != "auto" else ("layer" if c.objective == "wgan-gp" else "batch")


class Discriminator(nn.Module):
    def __init__(self, c: DCGANConfig):
        super().__init__()
        n_down = int(math.log2(c.image_size)) - 3
        width = c.ndf
        cin = c.channels + (1 if c.num_classes else 0)
        norm = {"batch": nn.BatchNorm2d, "layer": lambda w: nn.GroupNorm(1, w), "none": lambda w: nn.Identity()}[
            discriminator_norm(c)]
        layers = [nn.Conv2d(cin, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(n_down):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), norm(width * 2), nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        self.label = nn.Embedding(c.num_classes, c.image_size * c.image_size) if c.num_classes else None
        self.size = c.image_size

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, C, H, W) [, labels] -> logits (B,) (real > 0)."""
        if self.label is not None:
            x = torch.cat([x, self.label(labels).view(-1, 1, self.size, self.size)], dim=1)
        return self.net(x).view(-1)


class DCGAN(nn.Module):
    def __init__(self, config: DCGANConfig):
        super().__init__()
        if config.image_size < 16 or config.image_size & (config.image_size - 1):

            raise GenloomError(f"DCGAN image_size must be a power of two >= 16, got {config.image_size}")
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config) if config.with_discriminator else None

    def forward(self, z, labels=None):
        return self.generator(z, labels), None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.generator.parameters())

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float]):
        """One Adam for the discriminator ("d") and one for the generator ("g"); the loop steps them in turn."""
        if self.discriminator is None:

            raise GenloomError("this DCGAN has no discriminator (an imported generator): it cannot be trained")

        def adam(module):
            return torch.optim.AdamW(module.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)

        return Optimizers(d=adam(self.discriminator), g=adam(self.generator))

    # what the image pipeline (genloom.pipelines.images) asks of an image model
    sampler_name = "gan"
    condition_optional = False  # a conditional generator has no null class

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n images as uint8 (n, C, H, W); image i's latent comes from seed + i alone, so (seed, i) remakes it.

        A class-conditional generator takes `labels` (n,); genloom.pipelines.images checks them.
        """
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        z = torch.stack([torch.randn(self.config.nz, generator=torch.Generator().manual_seed(seed + i))
                         for i in range(n)])  # (n, nz)
        was = self.generator.training
        self.generator.eval()
        device = next(self.generator.parameters()).device
        x = self.generator(z.to(device), labels.to(device) if labels is not None else None)
        self.generator.train(was)
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()  # images leave the device


def label_choices(c) -> str:
    """'0..7 (amber, blue, ...)': the labels a conditional model knows, for error messages."""
    names = f" ({', '.join(c.classes)})" if getattr(c, "classes", None) else ""
    return f"0..{c.num_classes - 1}{names}"
