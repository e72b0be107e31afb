"""Run under torchrun by tests/test_distributed.py: after a few data-parallel steps of a VQ-VAE (codebook EMA
buffers) every rank must hold rank 0's buffers. Prints one JSON line on rank 0."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from genloom import distributed
from genloom.families import load_run_config
from genloom.train import Trainer

cfg = load_run_config(None, ["family='vqvae'", "data.source='digits'", "model.image_size=8", "model.base=8",
                             "train.batch_size=4", "train.max_steps=3", "train.eval_interval=100",
                             f"train.out_dir='{sys.argv[1]}'"])
trainer = Trainer(cfg, callbacks=[])
trainer.out.mkdir(parents=True, exist_ok=True)
trainer._loop()
mine = torch.cat([t.detach().flatten().double() for t in distributed.state_to_sync(trainer.model)])
every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
dist.all_gather(every, mine)
if dist.get_rank() == 0:
    print(json.dumps({"buffers": mine.numel(), "max_difference": max(float((e - mine).abs().max()) for e in every)}))
distributed.teardown()
