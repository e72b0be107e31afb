"""DCGAN (Radford et al. 2016): transposed-convolution generator, strided-convolution discriminator.

The layout is the classic one (the PyTorch DCGAN tutorial's), so pretrained generators of that shape
import directly (genloom.hf-style key mapping in `import_dcgan`). Class conditioning, when num_classes > 0,
concatenates a learned label embedding to the latent (conditional GAN, Mirza & Osindero 2014).
The adversarial training maths lives in objectives, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(kw_only=True)
class DCGANConfig:
    image_size: int = 64  # a power of two >= 16
    channels: int = 3
    nz: int = 100  # latent size
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width
    num_classes: int = 0  # > 0: class-conditional
    with_discriminator: bool = True  # False for an imported generator-only checkpoint


class Generator(nn.Module):
    def __init__(self, c: DCGANConfig):
        super().__init__()
        n_up = int(math.log2(c.image_size)) - 3  # 4x4 -> image_size in stride-2 steps after the first block
        width = c.ngf * 2 ** n_up
        zin = c.nz + (c.num_classes and c.nz)
        layers = [nn.ConvTranspose2d(zin, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(n_up):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, c.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.label = nn.Embedding(c.num_classes, c.nz) if c.num_classes else None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, nz) [, labels (B,)] -> images (B, C, H, W) in [-1, 1]."""
        if self.label is not None:
            z = torch.cat([z, self.label(labels)], dim=1)
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    def __init__(self, c: DCGANConfig):
        super().__init__()
        n_down = int(math.log2(c.image_size)) - 3
        width = c.ndf
        cin = c.channels + (1 if c.num_classes else 0)
        layers = [nn.Conv2d(cin, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(n_down):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
                       nn.LeakyReLU(0.2, True)]
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
            from genloom.errors import GenloomError

            raise GenloomError(f"DCGAN image_size must be a power of two >= 16, got {config.image_size}")
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config) if config.with_discriminator else None

    def forward(self, z, labels=None):
        return self.generator(z, labels), None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.generator.parameters())

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n images as uint8 (n, C, H, W); image i's latent comes from seed + i alone, so (seed, i) remakes it."""
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        z = torch.stack([torch.randn(self.config.nz, generator=torch.Generator().manual_seed(seed + i))
                         for i in range(n)])  # (n, nz)
        was = self.generator.training
        self.generator.eval()
        x = self.generator(z, labels)
        self.generator.train(was)
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def import_dcgan(path: str, out: str, *, name: str = "", source: str = "", licence: str = "") -> str:
    """A classic DCGAN generator checkpoint (nn.Sequential `main.N` keys) -> a genloom model folder.

    Loaded with torch.load(weights_only=True): tensors only, never arbitrary pickled objects.
    """
    from genloom.errors import GenloomError
    from genloom.store import export_model, safe_torch_load, write_model_card

    state = safe_torch_load(path)
    if isinstance(state, dict) and "netG_state_dict" in state:
        state = state["netG_state_dict"]
    keys = [k for k in state if k.startswith("main.")]
    if not keys:
        raise GenloomError(f"{path} holds no DCGAN generator (expected 'main.N' keys or 'netG_state_dict')")
    first, last = state["main.0.weight"], state[max(keys, key=lambda k: int(k.split(".")[1]))]
    n_convs = sum(1 for k in keys if k.endswith(".weight") and state[k].dim() == 4)
    cfg = DCGANConfig(image_size=2 ** (n_convs + 1), channels=last.shape[1], nz=first.shape[0],
                      ngf=first.shape[1] // 2 ** (n_convs - 2), with_discriminator=False)
    model = DCGAN(cfg)
    mapped = {f"generator.net.{k[len('main.'):]}": v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise GenloomError(f"{path}: not a classic DCGAN generator (missing {missing[:3]}, unexpected {unexpected[:3]})")
    card = {"family": "dcgan", "parameters": model.num_params(), "data": {"source": source or str(path)},
            "imported_from": str(path), "licence": licence}
    export_model(out, family="dcgan", model=model, model_config=cfg, tokenizer=None, card=card)
    write_model_card(out, card, name or f"DCGAN generator imported from {path}", f"genloom import-gan {path} --out {out}")
    return out
