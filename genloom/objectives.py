"""The training maths of each family, kept out of the networks and out of the loop.

A task owns a family's data and objective: `batch(split, generator)` draws a batch, `loss(model, batch)`
returns the scalar to minimise, and `tokens(batch)` counts the units the throughput is reported in.
"""

from __future__ import annotations

import numpy as np
import torch

from genloom.errors import GenloomError


def lm_loss(model, batch) -> torch.Tensor:
    """Next-token cross-entropy (the model computes it from its logits)."""
    x, y = batch
    _, loss = model(x, y)
    return loss


class LMTask:
    """Causal language modelling on a prepared token folder: random windows of block_size + 1 tokens."""

    unit = "tok"

    def __init__(self, data, block_size: int, batch_size: int):
        self.data, self.block_size, self.batch_size = data, block_size, batch_size
        self.splits = {name: data.split(name) for name in ("train", "val")}
        if len(self.splits["train"]) <= block_size + 1:
            raise GenloomError(
                f"training split has {len(self.splits['train'])} tokens, fewer than block_size + 1 "
                f"({block_size + 1}); use more text or a smaller model.block_size"
            )

    def has_split(self, split: str) -> bool:
        return len(self.splits[split]) > self.block_size + 1

    def batch(self, split: str, gen: torch.Generator):
        data = self.splits[split]
        T = self.block_size
        ix = torch.randint(len(data) - T - 1, (self.batch_size,), generator=gen).tolist()
        x = torch.from_numpy(np.stack([data[i : i + T] for i in ix]).astype(np.int64))
        y = torch.from_numpy(np.stack([data[i + 1 : i + 1 + T] for i in ix]).astype(np.int64))
        return x, y

    def tokens(self, batch) -> int:
        return batch[0].numel()

    loss = staticmethod(lm_loss)

    def sample(self, model, n: int = 2, max_new_tokens: int = 120) -> list[str]:
        """A few continuations of the start of the validation text, for the run's samples file."""
        from genloom.sample import SamplingParams, generate

        tok = self.data.tokenizer
        src = self.splits["val"] if len(self.splits["val"]) else self.splits["train"]
        prompt = tok.decode(src[: min(16, len(src))].tolist())
        sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.8, top_k=50, seed=0, stop_at_eot=True)
        was_training = model.training
        model.eval()
        try:
            return [prompt + c.text for c in generate(model, tok, [prompt] * n, sp)]
        finally:
            model.train(was_training)


TASKS = {"gpt": LMTask}
