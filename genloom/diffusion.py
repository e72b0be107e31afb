"""Noise schedules and samplers for discrete-time diffusion models, as plain functions.

Schedules: linear betas (Ho et al. 2020) and the cosine "squaredcos_cap_v2" (Nichol & Dhariwal 2021).
Every sampler has one signature, the network a single callable `model_fn(x_t, t) -> model output`
with t a long tensor of shape (B,):

    sample_<name>(model_fn, x_T, schedule, *, steps, generator=None, prediction_type="epsilon",
                  eta=0.0, callback=None) -> x_0

and calls model_fn exactly `steps` times, then callback(i, t, x) if given. `generator` is the only source of
randomness (DDPM, and DDIM with eta > 0): one torch.Generator for the whole batch, or a list of one per row
(as diffusers' randn_tensor takes them), so that row i's noise never depends on the batch around it. The maths follows diffusers' DDPMScheduler, DDIMScheduler
and DPMSolverMultistepScheduler with their default settings except clip_sample=False (no clamping of
the predicted x_0), and the tests check it against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from genloom.errors import GenloomError, choices

PREDICTION_TYPES = ("epsilon", "v_prediction")
SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True)
class Schedule:
    """A discrete noise schedule: beta_t, alpha_t = 1 - beta_t and their running product, (T,) float32 each."""

    kind: str
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @property
    def num_train_timesteps(self) -> int:
        return len(self.betas)


def _cosine_betas(n: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021: alpha_bar(t) = cos^2((t + s) / (1 + s) * pi / 2), s = 0.008, betas capped."""
    alpha_bar = [math.cos((i / n + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(n + 1)]
    return torch.tensor([min(1 - alpha_bar[i + 1] / alpha_bar[i], max_beta) for i in range(n)], dtype=torch.float64)


SCHEDULES = {
    "linear": lambda n, b0, b1: torch.linspace(b0, b1, n, dtype=torch.float64),
    "cosine": lambda n, b0, b1: _cosine_betas(n),
}


def make_schedule(kind: str = "linear", num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> Schedule:
    """The betas of a schedule and their products, computed in float64 and stored as float32."""
    if kind not in SCHEDULES:
        raise GenloomError(f"unknown noise schedule '{kind}'; choose one of {choices(SCHEDULES)}")
    if num_train_timesteps < 1:
        raise GenloomError(f"num_train_timesteps must be at least 1, got {num_train_timesteps}")
    betas = SCHEDULES[kind](num_train_timesteps, beta_start, beta_end)
    alphas = 1.0 - betas
    return Schedule(kind, betas.float(), alphas.float(), torch.cumprod(alphas, 0).float())


def _at(values: torch.Tensor, t, x: torch.Tensor) -> torch.Tensor:
    """values[t] shaped to broadcast against x: t an int or a (B,) tensor of timesteps."""
    out = values.to(device=x.device, dtype=x.dtype)[torch.as_tensor(t, device=x.device).long()]
    return out.reshape(-1, *([1] * (x.dim() - 1))) if out.dim() else out


def add_noise(schedule: Schedule, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
    """q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (Ho et al. 2020, eq. 4)."""
    abar = _at(schedule.alphas_cumprod, t, x0)
    return abar**0.5 * x0 + (1 - abar) ** 0.5 * noise


def velocity(schedule: Schedule, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
    """The v-prediction target sqrt(abar_t) noise - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022)."""
    abar = _at(schedule.alphas_cumprod, t, x0)
    return abar**0.5 * noise - (1 - abar) ** 0.5 * x0


def _check_prediction(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise GenloomError(f"unknown prediction type '{prediction_type}'; choose one of {choices(PREDICTION_TYPES)}")


def _x0_eps(schedule: Schedule, x_t, t, model_out, prediction_type: str):
    """(predicted x_0, predicted noise) from the model output at timestep t."""
    _check_prediction(prediction_type)
    abar = _at(schedule.alphas_cumprod, t, x_t)
    if prediction_type == "epsilon":
        return (x_t - (1 - abar) ** 0.5 * model_out) / abar**0.5, model_out
    return abar**0.5 * x_t - (1 - abar) ** 0.5 * model_out, abar**0.5 * model_out + (1 - abar) ** 0.5 * x_t


def pred_x0(schedule: Schedule, x_t: torch.Tensor, t, model_out: torch.Tensor,
            prediction_type: str = "epsilon") -> torch.Tensor:
    """The model's estimate of x_0 from x_t, for epsilon or v (Salimans & Ho 2022) prediction."""
    return _x0_eps(schedule, x_t, t, model_out, prediction_type)[0]


def timesteps(schedule: Schedule, steps: int, spacing: str = "leading") -> list[int]:
    """The descending timesteps of a `steps`-step sampler (Lin et al. 2023, table 2), as diffusers spaces them."""
    n = schedule.num_train_timesteps
    if not isinstance(steps, (int, np.integer)) or not 1 <= steps <= n:
        raise GenloomError(f"steps must be between 1 and num_train_timesteps ({n}), got {steps}")
    if spacing == "leading":
        ts = np.arange(steps) * (n // steps)
    elif spacing == "trailing":
        ts = np.round(np.arange(n, 0, -n / steps)) - 1
    elif spacing == "linspace":  # as DPMSolverMultistepScheduler: steps + 1 points, the last (0) dropped
        ts = np.linspace(0, n - 1, steps + 1).round()[1:]
    else:
        raise GenloomError(f"unknown timestep spacing '{spacing}'; choose one of {choices(SPACINGS)}")
    return sorted((int(t) for t in ts), reverse=True)


def _noise_like(x: torch.Tensor, generator) -> torch.Tensor:
    """Standard normal noise shaped like x, as diffusers' randn_tensor: one draw of the whole shape from one
    generator, or one draw per row from a list of generators (on their own device, then moved to x's)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != x.shape[0]:
            raise GenloomError(f"{len(generator)} generators for a batch of {x.shape[0]}: give one per row")
        return torch.stack([torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype)
                            for g in generator]).to(x.device)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def noise(shape, generators, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """x_T for a batch: row i drawn from generators[i] alone, so it is the same at any batch size."""
    return _noise_like(torch.empty(len(generators), *shape, device=device, dtype=dtype), list(generators))


def ddpm_step(schedule: Schedule, model_out: torch.Tensor, t: int, x_t: torch.Tensor, generator=None, *,
              prev_t: int | None = None, prediction_type: str = "epsilon", noise: torch.Tensor | None = None):
    """One ancestral step x_t -> x_prev_t of DDPM (Ho et al. 2020, eqs. 6-7), variance "fixed_small"."""
    prev_t = t - 1 if prev_t is None else prev_t
    abar = schedule.alphas_cumprod[t]
    abar_prev = schedule.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)
    alpha = abar / abar_prev  # the one-step alpha between t and prev_t
    x0, _ = _x0_eps(schedule, x_t, t, model_out, prediction_type)
    mean = (abar_prev**0.5 * (1 - alpha) / (1 - abar)) * x0 + (alpha**0.5 * (1 - abar_prev) / (1 - abar)) * x_t
    if t == 0:
        return mean
    var = ((1 - abar_prev) / (1 - abar) * (1 - alpha)).clamp(min=1e-20)
    noise = _noise_like(model_out, generator) if noise is None else noise
    return mean + var**0.5 * noise


def ddim_step(schedule: Schedule, model_out: torch.Tensor, t: int, prev_t: int, x_t: torch.Tensor, eta: float = 0.0,
              generator=None, noise: torch.Tensor | None = None, *, prediction_type: str = "epsilon"):
    """One step x_t -> x_prev_t of DDIM (Song et al. 2021, eqs. 12 and 16); eta = 0 deterministic, 1 DDPM-like."""
    abar = schedule.alphas_cumprod[t]
    abar_prev = schedule.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)
    x0, eps = _x0_eps(schedule, x_t, t, model_out, prediction_type)
    sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)) ** 0.5
    x_prev = abar_prev**0.5 * x0 + (1 - abar_prev - sigma**2) ** 0.5 * eps
    if eta > 0:
        noise = _noise_like(model_out, generator) if noise is None else noise
        x_prev = x_prev + sigma * noise
    return x_prev


def _tvec(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def sample_ddpm(model_fn, x_T, schedule, *, steps, generator=None, prediction_type="epsilon", eta=0.0,
                callback=None):
    """Ancestral sampling (Ho et al. 2020) over `steps` "leading"-spaced timesteps; eta is unused."""
    _check_prediction(prediction_type)
    ts = timesteps(schedule, steps, "leading")
    x = x_T
    for i, t in enumerate(ts):
        prev_t = ts[i + 1] if i + 1 < len(ts) else -1
        out = model_fn(x, _tvec(t, x))
        x = ddpm_step(schedule, out, t, x, generator, prev_t=prev_t, prediction_type=prediction_type)
        if callback is not None:
            callback(i, t, x)
    return x


def sample_ddim(model_fn, x_T, schedule, *, steps, generator=None, prediction_type="epsilon", eta=0.0,
                callback=None):
    """DDIM (Song et al. 2021) over `steps` "leading"-spaced timesteps; eta > 0 adds fresh noise each step."""
    _check_prediction(prediction_type)
    ts = timesteps(schedule, steps, "leading")
    stride = schedule.num_train_timesteps // steps
    x = x_T
    for i, t in enumerate(ts):
        out = model_fn(x, _tvec(t, x))
        x = ddim_step(schedule, out, t, t - stride, x, eta, generator, prediction_type=prediction_type)
        if callback is not None:
            callback(i, t, x)
    return x


def sample_dpmpp_2m(model_fn, x_T, schedule, *, steps, generator=None, prediction_type="epsilon", eta=0.0,
                    callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022), "linspace" timesteps down to sigma = 0; deterministic, eta unused.

    First-order (DDIM) on the first step and the last, second-order multistep in between, as diffusers'
    DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero").
    """
    _check_prediction(prediction_type)
    ts = timesteps(schedule, steps, "linspace")
    abar = schedule.alphas_cumprod.double()
    alpha = [float(abar[t] ** 0.5) for t in ts] + [1.0]  # after the last step: x_0 itself, alpha 1, sigma 0
    sigma = [float((1 - abar[t]) ** 0.5) for t in ts] + [0.0]
    lam = [math.log(a) - math.log(s) if s > 0 else math.inf for a, s in zip(alpha, sigma)]  # log-SNR / 2
    x, x0_prev = x_T, None
    for i, t in enumerate(ts):
        x0 = pred_x0(schedule, x, t, model_fn(x, _tvec(t, x)), prediction_type)
        h = lam[i + 1] - lam[i]
        d = x0
        h_last = lam[i] - lam[i - 1] if i > 0 else 0.0
        # second order: D1 from the previous x_0 estimate. With steps near num_train_timesteps "linspace"
        # rounds two timesteps to one; we stay first order around that empty step (diffusers gives NaN).
        if x0_prev is not None and i < len(ts) - 1 and h != 0 and h_last != 0:
            d = x0 + 0.5 * h / h_last * (x0 - x0_prev)
        x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * math.expm1(-h) * d
        x0_prev = x0
        if callback is not None:
            callback(i, t, x)
    return x


SAMPLERS: dict[str, Callable] = {"ddpm": sample_ddpm, "ddim": sample_ddim, "dpmpp_2m": sample_dpmpp_2m}


def sample(name: str, model_fn, x_T, schedule, *, steps, generator=None, prediction_type="epsilon", eta=0.0,
           callback=None):
    """Run the sampler called `name` from SAMPLERS."""
    if name not in SAMPLERS:
        raise GenloomError(f"unknown sampler '{name}'; choose one of {choices(SAMPLERS)}")
    return SAMPLERS[name](model_fn, x_T, schedule, steps=steps, generator=generator,
                          prediction_type=prediction_type, eta=eta, callback=callback)


def _cat(a, b):
    """Two conditions stacked along the batch: tensors, or tuples of tensors (None entries stay None)."""
    if isinstance(a, tuple):
        return tuple(_cat(x, y) for x, y in zip(a, b))
    return None if a is None else torch.cat([a, b])


def guided(model_fn, cond, uncond, scale: float):
    """Classifier-free guidance (Ho & Salimans 2022): uncond + scale (cond - uncond), both in one batch.

    model_fn(x_t, t, c) is the conditional network; c is a tensor, or a tuple of tensors (or None) when a
    network takes several conditions. The result is a plain model_fn(x_t, t) for any sampler.
    """

    def fn(x_t, t):  # (2B, ...) through the network, then split back into two (B, ...)
        out = model_fn(torch.cat([x_t, x_t]), torch.cat([t, t]), _cat(cond, uncond))
        out_cond, out_uncond = out.chunk(2)
        return out_uncond + scale * (out_cond - out_uncond)

    return fn
