"""Quality per compute: genloom's KJV recipe vs a reference recipe, same data split, same wall time.

genloom:   `genloom train --config configs/kjv.toml` (the starter recipe), stopped by train.max_minutes.
reference: transformers GPT2LMHeadModel of the same architecture, trained with nanoGPT's
           shakespeare-char hyperparameters (AdamW lr 1e-3, betas 0.9/0.99, weight decay 0.1 on all
           parameters, foreach AdamW, 100 warmup steps, cosine to 1e-4 over the same step budget,
           batch 32 x 256, clip 1.0, dropout 0.1) in a plain PyTorch loop, for the same wall time.
Both are scored with the same protocol: genloom.metrics.text.perplexity on the whole validation split
(context 256, stride 128). Lower validation loss is better, so the ratio is peer_loss / genloom_loss.

    python bench/quality.py --minutes 5      (prepares data/kjv-bpe2048 if it is missing)
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parent.parent
from common import report  # noqa: E402

from genloom.config import load_run_config  # noqa: E402
from genloom.data.text import TokenData, prepare  # noqa: E402
from genloom.hf import hf_config_from_gpt2, load_hf_gpt2  # noqa: E402
from genloom.metrics.text import perplexity  # noqa: E402
from genloom.train import Trainer  # noqa: E402


def reference_run(data: TokenData, model_cfg, minutes: float, steps: int, seed: int = 1337):
    """Train transformers' GPT2LMHeadModel with nanoGPT's recipe for `minutes` of wall time."""
    import transformers

    torch.manual_seed(seed)
    hf_cfg = transformers.GPT2Config(**{k: v for k, v in hf_config_from_gpt2(model_cfg).items()
                                        if k not in ("architectures", "torch_dtype")})
    model = transformers.GPT2LMHeadModel(hf_cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    train = data.split("train")
    gen = torch.Generator().manual_seed(seed)
    T, B = model_cfg.block_size, 32
    t_start, step, losses = time.perf_counter(), 0, []
    while time.perf_counter() - t_start < 60 * minutes:
        lr = 1e-3 * (step + 1) / 100 if step < 100 else \
            1e-4 + 0.5 * (1 + math.cos(math.pi * min(1.0, (step - 100) / max(1, steps - 100)))) * (1e-3 - 1e-4)
        for g in opt.param_groups:
            g["lr"] = lr
        ix = torch.randint(len(train) - T - 1, (B,), generator=gen).tolist()
        x = torch.from_numpy(np.stack([train[i : i + T] for i in ix]).astype(np.int64))
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        step += 1
    return model, step, time.perf_counter() - t_start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--config", default=str(ROOT / "configs" / "kjv.toml"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_run_config(args.config)
    data_dir = ROOT / cfg.data.dir
    if not (data_dir / "meta.json").exists():
        prepare("kjv", data_dir, "bpe", 2048)
    data = TokenData(data_dir)
    val = data.split("val")

    with tempfile.TemporaryDirectory() as tmp:
        cfg.data.dir = str(data_dir)
        cfg.train.out_dir = str(Path(tmp) / "genloom")
        cfg.train.max_minutes = args.minutes
        trainer = Trainer(cfg, callbacks=[])
        summary = trainer.fit()
        g_model = trainer.model.eval()
        g_eval = perplexity(g_model, val, context=256, stride=128)
        steps = cfg.train.max_steps

        ref, ref_steps, ref_secs = reference_run(data, trainer.model_config, args.minutes, steps)
        # score the reference through genloom's own evaluator on identical windows: import its weights
        ref_dir = Path(tmp) / "ref"
        ref.save_pretrained(ref_dir)
        ref_model, _ = load_hf_gpt2(ref_dir)
        r_eval = perplexity(ref_model, val, context=256, stride=128)

    rows = [{
        "case": "quality-kjv-val-loss",
        "unit": "val nats/token (lower is better; ratio = peer/genloom)",
        "genloom": round(g_eval["nll_nats_per_token"], 4),
        "peer": round(r_eval["nll_nats_per_token"], 4),
        "ratio": round(r_eval["nll_nats_per_token"] / g_eval["nll_nats_per_token"], 3),
        "minutes": args.minutes,
        "genloom_steps": summary["step"],
        "peer_steps": ref_steps,
        "peer_recipe": "transformers GPT2LMHeadModel + nanoGPT shakespeare-char recipe, same wall time",
        "protocol": g_eval["protocol"],
    }]
    report("quality", rows)


if __name__ == "__main__":
    main()
