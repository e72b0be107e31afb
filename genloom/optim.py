"""Optimizers the training loop steps: named groups stepped in turn (a GAN's two players)."""

from __future__ import annotations

import torch


class Optimizers:
    """Named optimizers stepped in turn (a GAN's discriminator "d" and generator "g"), saved as one."""

    def __init__(self, **parts: torch.optim.Optimizer):
        self.parts = parts

    @property
    def param_groups(self) -> list[dict]:  # the loop's learning-rate schedule sets every group
        return [g for opt in self.parts.values() for g in opt.param_groups]

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, opt in self.parts.items():
            opt.load_state_dict(state[name])
