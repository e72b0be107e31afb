"""The one seeded split every corpus, eval set and image folder uses: a permutation of range(n)."""

from __future__ import annotations

import numpy as np

from genloom.errors import GenloomError

VAL_FRACTION, SEED = 0.05, 1337  # the default document split; eval sets hold out its validation side


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic split of range(n) by a seeded permutation (at least one in each side when possible)."""
    if not 0.0 <= val_fraction < 1.0:
        raise GenloomError(f"val fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
