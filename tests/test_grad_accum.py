"""Gradient accumulation: one optimizer step over k micro-batches sees the mean of their gradients.

Backpropagating each micro-batch's loss unscaled (k times the gradient) passed every test: AdamW is nearly
invariant to the gradient's scale, so weights and losses hardly move. Here the gradient is compared directly.
"""

from __future__ import annotations

import copy

import pytest
import torch

from genloom.callbacks import default_callbacks
from genloom.train import Trainer

from conftest import make_cfg


@pytest.mark.parametrize("accum", [2, 3])
def test_optimizer_sees_the_mean_gradient_of_the_micro_batches(tmp_path, english_dir, accum):
    cfg = make_cfg(english_dir, tmp_path / "run", model={"dropout": 0.0}, max_steps=1, batch_size=4,
                   grad_accum=accum, grad_clip=0.0, eval_interval=100, ckpt_interval=100)
    trainer = Trainer(cfg, callbacks=default_callbacks(progress=False))
    reference = copy.deepcopy(trainer.model)
    data = torch.Generator()
    data.set_state(trainer.data_gen.get_state())
    seen = {}
    step = trainer.optimizer.step

    def spy(*a, **kw):
        seen["grads"] = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        return step(*a, **kw)

    trainer.optimizer.step = spy
    trainer.fit()

    reference.train()
    batches = [trainer.task.batch("train", data) for _ in range(accum)]  # the same micro-batches, same order
    losses = [trainer.task.loss(reference, b) for b in batches]
    loss = sum(x[0] if isinstance(x, tuple) else x for x in losses) / accum
    loss.backward()
    want = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    assert seen["grads"].keys() == want.keys()
    for n, g in want.items():
        torch.testing.assert_close(seen["grads"][n], g, rtol=1e-4, atol=1e-6, msg=n)
