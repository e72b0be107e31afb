"""Variational autoencoders: a convolutional VAE and a VQ-VAE.

VAE (Kingma & Welling 2014, "Auto-Encoding Variational Bayes"): a strided-conv encoder gives the mean and
log-variance of a diagonal Gaussian q(z|x); z = mu + sigma * eps (the reparameterisation trick); a
transposed-conv decoder gives per-pixel logits of p(x|z) (Bernoulli, or a Gaussian of fixed sigma = 0.1).
The ELBO weights the KL term by beta (Higgins et al. 2017, "beta-VAE"); beta = 1 is the plain VAE.

VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning"): the encoder's output is
snapped to its nearest entry of a learned codebook, gradients pass the snap unchanged (straight-through),
and the codebook learns either by its own loss term or by exponential moving averages of the encoder
outputs assigned to each code (the paper's appendix; Razavi et al. 2019, "VQ-VAE-2"). Codes nobody
picks are restarted on random encoder outputs (as in Dhariwal et al. 2020, "Jukebox"). A VQ-VAE alone
cannot sample: that needs a prior over its code grids, trained elsewhere.

Images enter both models as floats in [0, 1], (B, C, H, W); decoders return logits (sigmoid gives the image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.errors import GenloomError, choices

MSE_SIGMA = 0.1  # the VAE's Gaussian decoder: fixed per-pixel standard deviation, so -log p = 0.5 * err^2 / sigma^2


def _check_images(x: torch.Tensor, channels: int, size: int) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != (channels, size, size):
        raise GenloomError(f"this model takes images of shape (B, {channels}, {size}, {size}), got {tuple(x.shape)}")


def _to_uint8(logits: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(logits.float()) * 255).round().to(torch.uint8).cpu()  # images leave the device


def _from_uint8(x: torch.Tensor, channels: int, size: int, device) -> torch.Tensor:
    if x.dtype != torch.uint8:
        raise GenloomError(f"reconstruct takes uint8 images (0..255), got {x.dtype}")
    _check_images(x, channels, size)
    return x.to(device).float() / 255


def _adamw(params: list[nn.Parameter], no_decay_extra: tuple = (), *, weight_decay, lr, betas):
    """AdamW, weight decay on matrices and conv kernels only (nanoGPT's grouping)."""
    extra = {id(p) for p in no_decay_extra}
    decay = [p for p in params if p.dim() >= 2 and id(p) not in extra]
    no_decay = [p for p in params if p.dim() < 2 or id(p) in extra]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the last dim: (B, L) -> (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


# -----------------------------------------------------------------------------
# VAE


@dataclass(kw_only=True)
class VAEConfig:
    image_size: int = 28  # a multiple of 4
    channels: int = 1
    base: int = 32  # conv width at half resolution (twice that at quarter resolution)
    latent_dim: int = 16
    beta: float = 1.0  # weight of the KL term (beta-VAE)
    recon: str = "bce"  # bce | mse (Gaussian decoder, sigma = MSE_SIGMA)


class VAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        c = config
        if c.image_size % 4 or c.image_size < 4:
            raise GenloomError(f"VAE image_size must be a multiple of 4, got {c.image_size}")
        if c.recon not in ("bce", "mse"):
            raise GenloomError(f"unknown VAE recon '{c.recon}'; choose one of {choices(('bce', 'mse'))}")
        self.config = c
        s, w = c.image_size // 4, 2 * c.base
        self.encoder = nn.Sequential(
            nn.Conv2d(c.channels, c.base, 4, 2, 1), nn.SiLU(),  # (B, base, H/2, W/2)
            nn.Conv2d(c.base, w, 4, 2, 1), nn.SiLU(),  # (B, 2 base, H/4, W/4)
            nn.Flatten(), nn.Linear(w * s * s, 2 * c.latent_dim))  # (B, 2 latent): mu, logvar
        self.decoder = nn.Sequential(
            nn.Linear(c.latent_dim, w * s * s), nn.SiLU(), nn.Unflatten(1, (w, s, s)),  # (B, 2 base, H/4, W/4)
            nn.ConvTranspose2d(w, c.base, 4, 2, 1), nn.SiLU(),  # (B, base, H/2, W/2)
            nn.ConvTranspose2d(c.base, c.channels, 4, 2, 1))  # (B, C, H, W) logits

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W) in [0, 1] -> mu, logvar, each (B, latent_dim)."""
        _check_images(x, self.config.channels, self.config.image_size)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) -> logits (B, C, H, W)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """x (B, C, H, W) -> (logits (B, C, H, W), mu, logvar); noise (B, latent_dim) fixes eps."""
        mu, logvar = self.encode(x)
        eps = torch.randn_like(mu) if noise is None else noise.to(mu)
        z = mu + torch.exp(0.5 * logvar) * eps  # reparameterisation: a differentiable sample of q(z|x)
        return self.decode(z), mu, logvar

    def elbo_loss(self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None):
        """Negative ELBO per image, averaged over the batch: recon + beta * KL, and its parts as floats."""
        c = self.config
        if noise is None and generator is not None:
            noise = torch.randn((x.shape[0], c.latent_dim), generator=generator, device=generator.device)
        logits, mu, logvar = self(x, noise)
        logits, x = logits.float(), x.float()
        if c.recon == "bce":
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)  # (B,)
        else:
            recon = 0.5 * (torch.sigmoid(logits) - x).pow(2).flatten(1).sum(1) / MSE_SIGMA**2  # (B,)
        kl = gaussian_kl(mu.float(), logvar.float())  # (B,)
        recon, kl = recon.mean(), kl.mean()
        return recon + c.beta * kl, {"recon": recon.item(), "kl": kl.item()}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float]):
        return _adamw(list(self.parameters()), weight_decay=weight_decay, lr=lr, betas=betas)

    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """What `genloom reconstruct --latents` saves: the posterior means (B, latent_dim)."""
        return self.encode(x)[0]

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Saved latents (N, latent_dim) -> uint8 images (N, C, H, W)."""
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise GenloomError(f"latents of shape {tuple(z.shape)}; this VAE takes (N, {self.config.latent_dim})")
        return (torch.sigmoid(self.eval().decode(z.float())) * 255).round().to(torch.uint8)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, C, H, W) -> their reconstructions through the posterior mean, uint8 (B, C, H, W)."""
        x = _from_uint8(x, self.config.channels, self.config.image_size, self.decoder[0].weight.device)
        was = self.training
        self.eval()
        mu, _ = self.encode(x)
        out = _to_uint8(self.decode(mu))
        self.train(was)
        return out

    # what the image pipeline (genloom.pipelines.images) asks of an image model
    sampler_name = "vae"
    condition_optional = False

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n images as uint8 (n, C, H, W) decoded from z ~ N(0, I); image i's latent comes from seed + i alone,
        so (seed, i) remakes it."""
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        z = torch.stack([torch.randn(self.config.latent_dim, generator=torch.Generator().manual_seed(seed + i))
                         for i in range(n)])  # (n, latent_dim)
        was = self.training
        self.eval()
        out = _to_uint8(self.decode(z.to(self.decoder[0].weight.device)))
        self.train(was)
        return out


# -----------------------------------------------------------------------------
# VQ-VAE


@dataclass(kw_only=True)
class VQVAEConfig:
    image_size: int = 28
    channels: int = 1
    base: int = 64  # conv width
    embed_dim: int = 32  # D: size of a code vector
    codebook_size: int = 128  # K: number of codes
    downsample: int = 4  # a power of two >= 2: the code grid is image_size / downsample on a side
    quantizer: str = "ema"  # ema | straight_through
    commitment: float = 0.25  # beta in the paper: pulls encoder outputs toward their codes
    ema_decay: float = 0.99  # codebook EMA (quantizer="ema") and the usage counts of both quantizers
    dead_code_threshold: float = 1.0  # a code whose EMA usage count falls below this is restarted
    recon: str = "mse"  # mse | bce


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation of (B, D, H, W) encoder outputs onto a (K, D) codebook.

    quantizer="straight_through": the codebook is a parameter trained by ||sg(z_e) - e||^2.
    quantizer="ema": the codebook is a buffer, each code the EMA mean of the encoder outputs assigned to it.
    Both keep an EMA of each code's usage per batch; in training, codes below dead_code_threshold are moved
    onto random encoder outputs of the batch. Every code starts with usage 0, so the first training batch
    in effect initialises the rarely picked codes from data.
    """

    def __init__(self, codebook_size: int, embed_dim: int, *, quantizer: str = "ema", commitment: float = 0.25,
                 ema_decay: float = 0.99, dead_code_threshold: float = 1.0, eps: float = 1e-5):
        super().__init__()
        if quantizer not in ("ema", "straight_through"):
            raise GenloomError(f"unknown quantizer '{quantizer}'; choose one of {choices(('ema', 'straight_through'))}")
        if codebook_size < 1 or embed_dim < 1:
            raise GenloomError(f"a codebook needs codebook_size >= 1 and embed_dim >= 1, "
                               f"got {codebook_size} and {embed_dim}")
        if not 0.0 <= ema_decay < 1.0:
            raise GenloomError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.K, self.D, self.quantizer = codebook_size, embed_dim, quantizer
        self.commitment, self.decay, self.threshold, self.eps = commitment, ema_decay, dead_code_threshold, eps
        init = torch.empty(codebook_size, embed_dim).uniform_(-1 / codebook_size, 1 / codebook_size)
        if quantizer == "ema":
            self.register_buffer("codebook", init)
            self.register_buffer("cluster_size", torch.ones(codebook_size))  # EMA of counts
            self.register_buffer("embed_sum", init.clone())  # EMA of the sums of assigned z_e (sum / size = code)
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("usage", torch.zeros(codebook_size))  # EMA of each code's count per batch
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))  # dead codes restarted so far

    @torch.no_grad()
    def _nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """flat (N, D) -> index of the nearest code by squared L2, (N,) int64, in float32."""
        z, e = flat.float(), self.codebook.float()
        d = z.pow(2).sum(1, keepdim=True) - 2 * z @ e.t() + e.pow(2).sum(1)[None]  # (N, K)
        return d.argmin(1)

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e (B, D, H, W) -> code indices (B, H, W), with no training-time side effects."""
        B, D, H, W = z_e.shape
        return self._nearest(z_e.permute(0, 2, 3, 1).reshape(-1, D)).view(B, H, W)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, H, W) -> code vectors z_q (B, D, H, W)."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    def forward(self, z_e: torch.Tensor):
        """z_e (B, D, H, W) -> (z_q (B, D, H, W) straight-through, indices (B, H, W), loss, stats)."""
        B, D, H, W = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, D)  # (N, D), N = B H W
        idx = self._nearest(flat)  # (N,)
        z_q = self.lookup(idx.view(B, H, W)).float()  # (B, D, H, W), from the codebook the assignment used
        commit = F.mse_loss(z_e.float(), z_q.detach())
        if self.quantizer == "straight_through":
            loss = F.mse_loss(z_q, z_e.detach().float()) + self.commitment * commit
        else:
            loss = self.commitment * commit
        counts = torch.bincount(idx, minlength=self.K).float()  # (K,)
        probs = counts / counts.sum()
        stats = {"perplexity": torch.exp(-(probs * torch.log(probs + 1e-10)).sum()), "used": (counts > 0).sum()}
        if self.training:
            self._update(flat.detach().float(), idx, counts)
        z_q = z_e + (z_q.to(z_e.dtype) - z_e).detach()  # straight-through: forward z_q, gradient to z_e unchanged
        return z_q, idx.view(B, H, W), loss, stats

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        """Training only: EMA codebook (quantizer="ema"), usage counts, dead-code restarts."""
        self.usage.lerp_(counts, 1 - self.decay)
        if self.quantizer == "ema":
            sums = torch.zeros_like(self.embed_sum).index_add_(0, idx, flat)  # (K, D): sum of z_e per code
            self.cluster_size.lerp_(counts, 1 - self.decay)
            self.embed_sum.lerp_(sums, 1 - self.decay)
            n = self.cluster_size.sum()
            size = (self.cluster_size + self.eps) / (n + self.K * self.eps) * n  # Laplace smoothing: never 0
            self.codebook.copy_(self.embed_sum / size[:, None])
        dead = (self.usage < self.threshold).nonzero().squeeze(1)
        if dead.numel():
            z = flat[torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)]  # (n_dead, D)
            self.codebook[dead] = z.to(self.codebook.dtype)
            self.usage[dead] = self.threshold
            if self.quantizer == "ema":
                self.cluster_size[dead] = 1.0
                self.embed_sum[dead] = z
            self.restarts += dead.numel()


class ResidualBlock(nn.Module):
    """The VQ-VAE paper's block: x + conv1x1(relu(conv3x3(relu(x))))."""
    def __init__(self, ch: int):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1))

    def forward(self, x):
        return x + self.net(x)


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        c = config
        if c.downsample < 2 or c.downsample & (c.downsample - 1):
            raise GenloomError(f"VQ-VAE downsample must be a power of two >= 2 (2, 4, 8), got {c.downsample}")
        if c.image_size % c.downsample:
            raise GenloomError(f"VQ-VAE image_size must be a multiple of downsample {c.downsample}, got {c.image_size}")
        if c.recon not in ("mse", "bce"):
            raise GenloomError(f"unknown VQ-VAE recon '{c.recon}'; choose one of {choices(('bce', 'mse'))}")
        self.config = c
        n_down = int(math.log2(c.downsample))
        enc = [nn.Conv2d(c.channels, c.base, 4, 2, 1)]  # (B, base, H/2, W/2)
        for _ in range(n_down - 1):
            enc += [nn.ReLU(), nn.Conv2d(c.base, c.base, 4, 2, 1)]  # halves H, W
        enc += [nn.ReLU(), nn.Conv2d(c.base, c.base, 3, padding=1), ResidualBlock(c.base), ResidualBlock(c.base),
                nn.ReLU(), nn.Conv2d(c.base, c.embed_dim, 1)]  # (B, D, h, w)
        self.encoder = nn.Sequential(*enc)
        self.quantizer = VectorQuantizer(c.codebook_size, c.embed_dim, quantizer=c.quantizer, commitment=c.commitment,
                                         ema_decay=c.ema_decay, dead_code_threshold=c.dead_code_threshold)
        dec = [nn.Conv2d(c.embed_dim, c.base, 3, padding=1), ResidualBlock(c.base), ResidualBlock(c.base)]
        for _ in range(n_down - 1):
            dec += [nn.ReLU(), nn.ConvTranspose2d(c.base, c.base, 4, 2, 1)]  # doubles H, W
        dec += [nn.ReLU(), nn.ConvTranspose2d(c.base, c.channels, 4, 2, 1)]  # (B, C, H, W) logits
        self.decoder = nn.Sequential(*dec)

    @property
    def code_shape(self) -> tuple[int, int]:
        s = self.config.image_size // self.config.downsample
        return s, s

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) in [0, 1] -> code indices (B, h, w) int64; never updates the codebook."""
        _check_images(x, self.config.channels, self.config.image_size)
        return self.quantizer.nearest(self.encoder(x))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """code indices (B, h, w) -> logits (B, C, H, W)."""
        if indices.dim() != 3 or tuple(indices.shape[1:]) != self.code_shape:
            raise GenloomError(f"this VQ-VAE decodes code grids of shape (B, {self.code_shape[0]}, "
                               f"{self.code_shape[1]}), got {tuple(indices.shape)}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.config.codebook_size):
            raise GenloomError(f"code index out of range: the codebook holds 0..{self.config.codebook_size - 1}")
        return self.decoder(self.quantizer.lookup(indices.long()))

    def forward(self, x: torch.Tensor):
        """x (B, C, H, W) in [0, 1] -> (logits (B, C, H, W), vq_loss, stats)."""
        _check_images(x, self.config.channels, self.config.image_size)
        z_q, _, vq_loss, stats = self.quantizer(self.encoder(x))
        return self.decoder(z_q), vq_loss, stats

    def loss(self, x: torch.Tensor):
        """Reconstruction (per-pixel mean) + the quantizer's loss, and the parts as floats."""
        logits, vq_loss, stats = self(x)
        logits, x = logits.float(), x.float()
        if self.config.recon == "mse":
            recon = F.mse_loss(torch.sigmoid(logits), x)
        else:
            recon = F.binary_cross_entropy_with_logits(logits, x)
        parts = {"recon": recon.item(), "vq": vq_loss.item(), "perplexity": stats["perplexity"].item()}
        return recon + vq_loss, parts

    def num_params(self) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n + (self.quantizer.codebook.numel() if self.config.quantizer == "ema" else 0)  # EMA codebook: a buffer

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float]):
        """AdamW; no decay on a trained codebook either (decay would pull the codes to the origin)."""
        return _adamw(list(self.parameters()), (self.quantizer.codebook,), weight_decay=weight_decay, lr=lr,
                      betas=betas)

    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """What `genloom reconstruct --latents` saves: the code map (B, h, w)."""
        return self.encode(x)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Saved code maps (N, h, w) -> uint8 images (N, C, H, W)."""
        h, w = self.code_shape
        if z.dim() != 3 or tuple(z.shape[1:]) != (h, w):
            raise GenloomError(f"codes of shape {tuple(z.shape)}; this VQ-VAE takes (N, {h}, {w})")
        return self.decode_to_uint8(z.long())

    def decode_to_uint8(self, indices: torch.Tensor) -> torch.Tensor:
        """code indices (B, h, w) -> uint8 images (B, C, H, W)."""
        was = self.training
        self.eval()
        out = _to_uint8(self.decode_indices(indices.to(self.decoder[0].weight.device)))
        self.train(was)
        return out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, C, H, W) -> encoded, quantised and decoded, uint8 (B, C, H, W)."""
        x = _from_uint8(x, self.config.channels, self.config.image_size, self.decoder[0].weight.device)
        return self.decode_to_uint8(self.encode(x))

    prior = None  # a genloom GPT over the code indices; genloom.checkpoints attaches `<model folder>/prior`
    prior_tokenizer = None

    # what the image pipeline (genloom.pipelines.images) asks of an image model: images come from the GPT
    # prior over code grids, sampled by the pipeline through the one decoding loop (genloom.sample)
    sampling_options = frozenset({"temperature", "top_k", "top_p", "min_p"})
    sampling_defaults = MappingProxyType({"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0})
    sampler_name = "gpt-prior"
    condition_optional = False  # a conditional prior's records always start with a class token
    prior_sampled = True

    @property
    def not_ready(self) -> str | None:
        """Why this model cannot make images yet (None: it can)."""
        if self.prior is None:
            return ("this VQ-VAE has no prior over its codes yet: train one on `genloom codes` data and "
                    "`genloom attach-prior` it (README: VQ-VAE prior)")
        return None

    @property
    def class_names(self) -> list[str]:
        return list(self.prior_tokenizer.classes) if self.prior_tokenizer is not None else []

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
