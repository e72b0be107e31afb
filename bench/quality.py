"""Quality per step: the KJV starter's recipe vs a reference recipe, both trained now, same data, same steps.

genloom:   configs/kjv.toml through genloom's Trainer (fused AdamW, lr 2e-3 -> 2e-4, betas 0.9/0.95, decay
           on matrices only, batch 32 x 256, dropout 0.1), trained in this process for --steps steps.
reference: transformers GPT2LMHeadModel of the same architecture and dropout, in a plain PyTorch loop with
           nanoGPT's shakespeare-char hyperparameters (torch.optim.AdamW(fused=True), the fastest torch AdamW
           on CPU; lr 1e-3 -> 1e-4, betas 0.9/0.99, weight decay 0.1 on all parameters, clip 1.0, batch
           32 x 256), trained in the same process right after, for the same number of steps.
Both warm up for the same share of the run (kjv.toml's 100 of 500 steps, scaled to --steps) and then decay
by cosine to lr/10 at the last step. Same token files, same train split, same tokens per step.
Both are scored at their LAST step (no checkpoint picked on any split) with one protocol:
genloom.metrics.text.perplexity on the whole validation split (context 256, stride 128).
Lower loss is better, so ratio = peer_loss / genloom_loss. Step times: every step of both runs is timed;
best and median are reported (the two runs are sequential, so a load change between them shows up in the
time figures, not in the losses).

    python bench/quality.py               # kjv.toml's 500 steps each: about 25 min on 2 cores
    python bench/quality.py --steps 100   # a reduced run
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
ROOT = Path(__file__).resolve().parent.parent

from bench.common import report  # noqa: E402
from genloom.callbacks import Callback  # noqa: E402
from genloom.data.text import TokenData  # noqa: E402
from genloom.families import load_run_config  # noqa: E402
from genloom.hf import hf_config_from_gpt2, load_hf_gpt2  # noqa: E402
from genloom.metrics.text import perplexity  # noqa: E402
from genloom.train import Trainer  # noqa: E402


class StepTimes(Callback):
    """The Trainer's own per-step wall times (the increments of its elapsed_s)."""

    def __init__(self):
        self.times, self.last = [], 0.0

    def on_step_end(self, trainer, info):
        self.times.append(info["elapsed_s"] - self.last)
        self.last = info["elapsed_s"]


def genloom_run(config: str, steps: int, warmup: int, out_dir: str):
    over = [f"train.out_dir='{out_dir}'", f"train.max_steps={steps}", f"train.warmup_steps={warmup}",
            "train.max_minutes=0", f"train.eval_interval={steps}", f"train.ckpt_interval={steps}",
            "train.sample_interval=0"]
    cfg = load_run_config(config, over)
    timer = StepTimes()
    trainer = Trainer(cfg, callbacks=[timer])
    trainer.fit()
    return trainer, timer.times


def reference_run(data: TokenData, model_cfg, steps: int, warmup: int, seed: int = 1337):
    """Train transformers' GPT2LMHeadModel with nanoGPT's recipe for `steps` steps; per-step wall times."""
    import transformers

    torch.manual_seed(seed)
    hf_cfg = transformers.GPT2Config(**{k: v for k, v in hf_config_from_gpt2(model_cfg).items()
                                        if k not in ("architectures", "torch_dtype")})
    model = transformers.GPT2LMHeadModel(hf_cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, fused=True)
    train = data.split("train")
    gen = torch.Generator().manual_seed(seed)
    T, B = model_cfg.block_size, 32
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        if step < warmup:
            lr = 1e-3 * (step + 1) / warmup
        else:
            frac = (step - warmup) / max(1, steps - warmup)
            lr = 1e-4 + 0.5 * (1 + math.cos(math.pi * frac)) * (1e-3 - 1e-4)
        for g in opt.param_groups:
            g["lr"] = lr
        ix = torch.randint(len(train) - T - 1, (B,), generator=gen).tolist()
        x = torch.from_numpy(np.stack([train[i : i + T] for i in ix]).astype(np.int64))
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return model, times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "kjv.toml"))
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps for each recipe (default: the config's)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    cfg = load_run_config(args.config)
    steps = args.steps or cfg.train.max_steps
    warmup = max(1, round(cfg.train.warmup_steps * steps / cfg.train.max_steps))
    with tempfile.TemporaryDirectory() as tmp:
        trainer, g_times = genloom_run(args.config, steps, warmup, f"{tmp}/run")
        data = trainer.data
        val = data.split("val")
        g_eval = perplexity(trainer.model.eval(), val, context=256, stride=128)  # the last step's weights
        ref, r_times = reference_run(data, trainer.model.config, steps, warmup)
        ref.save_pretrained(f"{tmp}/ref")  # score the reference with genloom's evaluator: same windows
        trainer.tokenizer.save(Path(tmp) / "ref" / "genloom_tokenizer.json")
        ref_model, _ = load_hf_gpt2(f"{tmp}/ref")
    r_eval = perplexity(ref_model, val, context=256, stride=128)
    tokens = cfg.train.batch_size * trainer.model.config.block_size
    report("quality", [{
        "case": "quality-kjv-val-loss",
        "unit": "validation nats/token at equal steps (lower is better; ratio = peer/genloom)",
        "genloom": round(g_eval["nll_nats_per_token"], 4),
        "peer": round(r_eval["nll_nats_per_token"], 4),
        "ratio": round(r_eval["nll_nats_per_token"] / g_eval["nll_nats_per_token"], 3),
        "steps": steps,
        "warmup_steps": warmup,
        "full_run": steps == cfg.train.max_steps,
        "tokens_per_step": tokens,
        "genloom_step_s": {"best": round(min(g_times), 3), "median": round(statistics.median(g_times), 3)},
        "peer_step_s": {"best": round(min(r_times), 3), "median": round(statistics.median(r_times), 3)},
        "step_time_ratio_median": round(statistics.median(r_times) / statistics.median(g_times), 3),
        "genloom_train_s": round(sum(g_times), 1),
        "peer_train_s": round(sum(r_times), 1),
        "scored": "the last step's weights on both sides (no checkpoint selection)",
        "timing": "both trained now in this process, genloom first, then the peer; every step timed",
        "genloom_recipe": f"{Path(args.config).name} (genloom Trainer, fused AdamW), max_steps={steps}",
        "peer_recipe": "transformers GPT2LMHeadModel + nanoGPT shakespeare-char hyperparameters, "
                       "torch.optim.AdamW(fused=True), same steps",
        "protocol": g_eval["protocol"],
    }])


if __name__ == "__main__":
    main()
