"""A small DDPM-style U-Net (Ho et al. 2020) and the diffusion model around it.

U-Net: sinusoidal timestep embedding -> MLP; residual blocks (GroupNorm, SiLU, conv, timestep added)
at each resolution; self-attention at the low resolutions; skip connections from the way down to the
way up. Conditioning adds an embedding to the timestep embedding: a class label (with one extra "null"
class for classifier-free guidance, Ho & Salimans 2022) or a sentence embedding (all-MiniLM-L6-v2, 384-d).
DiffusionModel holds the U-Net, its EMA copy (the weights sampling uses) and the noise schedule
settings; the training maths is in objectives.DiffusionTask, the samplers in genloom.diffusion.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom import diffusion
from genloom.embeddings import embed
from genloom.errors import GenloomError


@dataclass(kw_only=True)
class UNetConfig:
    image_size: int = 28
    channels: int = 1
    base: int = 32  # channels at full resolution
    mults: list = field(default_factory=lambda: [1, 2, 2])  # per resolution level
    attn_levels: list = field(default_factory=lambda: [2])  # levels (0 = full resolution) with self-attention
    dropout: float = 0.1
    num_classes: int = 0  # > 0: class-conditional (index num_classes is the null class)
    classes: list = field(default_factory=list)  # class names, so a label can be asked for by name
    cond_dim: int = 0  # > 0: conditioned on a sentence embedding of this size
    schedule: str = "linear"  # linear | cosine
    num_train_timesteps: int = 1000
    prediction: str = "epsilon"  # epsilon | v_prediction
    ema_decay: float = 0.999
    cond_dropout: float = 0.1  # training: the share of labels replaced by the null class (for guidance)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of integer timesteps: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.norm2, self.conv2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]  # (B, cout, 1, 1) broadcast over H, W
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return h + self.skip(x)


class Attention(nn.Module):
    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.norm, self.qkv, self.proj, self.heads = nn.GroupNorm(8, ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1), heads

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        y = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))  # (B, h, HW, c)
        return x + self.proj(y.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    def __init__(self, c: UNetConfig):
        super().__init__()
        levels = len(c.mults)
        if c.image_size % 2 ** (levels - 1):
            raise GenloomError(f"a U-Net with {levels} levels halves the image {levels - 1} times: image_size "
                               f"{c.image_size} must be divisible by {2 ** (levels - 1)}")
        tdim = 4 * c.base
        self.c = c
        self.time = nn.Sequential(nn.Linear(c.base, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.label = nn.Embedding(c.num_classes + 1, tdim) if c.num_classes else None
        self.cond = nn.Linear(c.cond_dim, tdim) if c.cond_dim else None
        self.inp = nn.Conv2d(c.channels, c.base, 3, padding=1)
        chans = [c.base * m for m in c.mults]
        self.down, self.down_attn, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        cin = c.base
        for i, ch in enumerate(chans):
            self.down.append(ResBlock(cin, ch, tdim, c.dropout))
            self.down_attn.append(Attention(ch) if i in c.attn_levels else nn.Identity())
            self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1) if i < levels - 1 else nn.Identity())
            cin = ch
        self.mid1, self.mid_attn, self.mid2 = ResBlock(cin, cin, tdim, c.dropout), Attention(cin), ResBlock(cin, cin, tdim, c.dropout)
        self.up, self.up_attn, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            self.up.append(ResBlock(cin + ch, ch, tdim, c.dropout))
            self.up_attn.append(Attention(ch) if i in c.attn_levels else nn.Identity())
            self.upsample.append(nn.Upsample(scale_factor=2, mode="nearest") if i > 0 else nn.Identity())
            cin = ch
        self.out = nn.Sequential(nn.GroupNorm(8, cin), nn.SiLU(), nn.Conv2d(cin, c.channels, 3, padding=1))

    def forward(self, x, t, labels=None, cond=None):
        """x (B, C, H, W) noisy images in [-1, 1], t (B,) timesteps -> the prediction, same shape as x."""
        emb = self.time(timestep_embedding(t, self.c.base))  # (B, tdim)
        if self.label is not None:
            labels = torch.full_like(t, self.c.num_classes) if labels is None else labels  # None: unconditional
            emb = emb + self.label(labels)
        if self.cond is not None and cond is not None:
            emb = emb + self.cond(cond)
        h = self.inp(x)
        skips = []
        for block, attn, down in zip(self.down, self.down_attn, self.downsample):
            h = attn(block(h, emb))
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for block, attn, up in zip(self.up, self.up_attn, self.upsample):
            h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            h = up(h)
        return self.out(h)


class DiffusionModel(nn.Module):
    """The U-Net being trained and its exponential moving average, which is what sampling uses."""
    def __init__(self, config: UNetConfig):
        super().__init__()
        if config.prediction not in ("epsilon", "v_prediction"):
            raise GenloomError(f"unknown prediction '{config.prediction}'; choose one of epsilon, v_prediction")
        self.config = config
        self.unet = UNet(config)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def forward(self, x, t, labels=None, cond=None):
        return self.unet(x, t, labels, cond), None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float]):
        return torch.optim.AdamW(self.unet.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)

    @torch.no_grad()
    def update_ema(self) -> None:
        """EMA with warmup, decay min(ema_decay, (1 + n) / (10 + n)): early averages are not the random init."""
        n = int(self.ema_updates)
        d = min(self.config.ema_decay, (1 + n) / (10 + n))
        for e, p in zip(self.ema.parameters(), self.unet.parameters()):
            e.lerp_(p, 1 - d)
        self.ema_updates += 1

    # what the image pipeline (genloom.pipelines.images) asks of an image model
    sampling_options = frozenset({"sampler", "steps", "guidance", "eta"})
    sampling_defaults = MappingProxyType({"sampler": "ddim", "steps": 50, "guidance": 1.0, "eta": 0.0})
    sampler_name = None  # named by the diffusion sampler chosen
    condition_optional = True  # the null class / empty prompt of classifier-free guidance training

    @property
    def text_conditional(self) -> bool:
        return bool(self.config.cond_dim)

    @property
    def max_sampling_steps(self) -> int:
        return self.config.num_train_timesteps

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None, *, sampler: str = "ddim", steps: int = 50,
               labels: torch.Tensor | None = None, prompts: list[str] | None = None, guidance: float = 1.0,
               eta: float = 0.0, use_ema: bool = True) -> torch.Tensor:
        """n images as uint8 (n, C, H, W) with a genloom.diffusion sampler.

        Image i's noise (x_T and every step's) comes from its own generator seeded seed + i, so an image is
        the same at any batch size and `sample(1, seed + i)` remakes it. A class-conditional model takes
        `labels` (n,), a text-conditional one `prompts` (n strings, each embedded alone with all-MiniLM-L6-v2);
        guidance != 1 is classifier-free guidance (genloom.diffusion.guided). The options are checked once, by
        genloom.pipelines.images, not here.
        """
        c = self.config
        net = (self.ema if use_ema else self.unet).eval()
        device = next(net.parameters()).device
        seed = int(torch.randint(0, 2**31 - 1, (1,))) if seed is None else seed
        gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
        x = diffusion.noise((c.channels, c.image_size, c.image_size), gens, device=device)  # (n, C, H, W)
        labels = labels.to(device) if labels is not None else None
        cond = embed_each(prompts).to(device) if prompts is not None else None  # (n, cond_dim)

        def conditional(x_t, t, condition):
            return net(x_t, t, *condition)

        if guidance == 1.0 or (labels is None and cond is None):
            model_fn = lambda x_t, t: net(x_t, t, labels, cond)  # noqa: E731
        else:
            null = (None if labels is None else torch.full_like(labels, c.num_classes),
                    None if cond is None else torch.zeros_like(cond))
            model_fn = diffusion.guided(conditional, (labels, cond), null, guidance)
        schedule = diffusion.make_schedule(c.schedule, c.num_train_timesteps)
        x0 = diffusion.sample(sampler, model_fn, x, schedule, steps=steps, generator=gens, prediction_type=c.prediction,
                              eta=eta)
        return ((x0.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()  # images leave the device


def embed_each(prompts: list[str]) -> torch.Tensor:
    """(n, 384) sentence embeddings, each distinct prompt embedded alone: a prompt's vector (and so its image)
    never depends on the other prompts of the batch (padding in a batch moves the floats)."""
    distinct = list(dict.fromkeys(prompts))
    vectors = {p: torch.from_numpy(embed([p]))[0] for p in distinct}
    return torch.stack([vectors[p] for p in prompts])
