"""Quality per compute: the KJV starter vs a reference recipe, same data split, same wall time.

genloom:   the bundled KJV starter as trained by `bash scripts/train_starters.sh kjv` (configs/kjv.toml);
           its wall time is read from its model card.
reference: transformers GPT2LMHeadModel of the same architecture and dropout, trained in a plain PyTorch
           loop with nanoGPT's shakespeare-char hyperparameters (AdamW lr 1e-3, betas 0.9/0.99, weight
           decay 0.1 on all parameters, torch's default (foreach) AdamW, 100 warmup steps, then cosine to
           1e-4 over the wall-time budget, batch 32 x 256, clip 1.0) for the same number of seconds.
Both are scored with one protocol: genloom.metrics.text.perplexity on the whole validation split
(context 256, stride 128). Lower loss is better, so ratio = peer_loss / genloom_loss.

    python bench/quality.py            (needs runs/kjv or models/kjv, and data/kjv-bpe2048)
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

from genloom.families import load_run_config  # noqa: E402
from genloom.data.text import TokenData  # noqa: E402
from genloom.hf import hf_config_from_gpt2, load_hf_gpt2  # noqa: E402
from genloom.metrics.text import perplexity  # noqa: E402
from genloom.checkpoints import load_model  # noqa: E402


def reference_run(data: TokenData, model_cfg, seconds: float, seed: int = 1337):
    """Train transformers' GPT2LMHeadModel with nanoGPT's recipe for `seconds` of wall time."""
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
    t_start, step = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - t_start) < seconds:
        frac = elapsed / seconds
        lr = 1e-3 * (step + 1) / 100 if step < 100 else 1e-4 + 0.5 * (1 + math.cos(math.pi * frac)) * (1e-3 - 1e-4)
        for g in opt.param_groups:
            g["lr"] = lr
        ix = torch.randint(len(train) - T - 1, (B,), generator=gen).tolist()
        x = torch.from_numpy(np.stack([train[i : i + T] for i in ix]).astype(np.int64))
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
    return model, step, time.perf_counter() - t_start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "runs" / "kjv"), help="the starter run (or models/kjv)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "kjv.toml"))
    ap.add_argument("--seconds", type=float, default=0, help="override the budget (default: the starter's)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_run_config(args.config)
    model_path = Path(args.model) if Path(args.model).exists() else ROOT / "models" / "kjv"
    lm = load_model(model_path)
    card = lm.meta.get("card", {})
    seconds = args.seconds or card["train_seconds"]
    data = TokenData(ROOT / cfg.data.dir)
    val = data.split("val")
    g_eval = perplexity(lm.model, val, context=256, stride=128)

    ref, ref_steps, ref_secs = reference_run(data, lm.config, seconds)
    with tempfile.TemporaryDirectory() as tmp:  # score the reference with genloom's evaluator: same windows
        ref.save_pretrained(tmp)
        lm.tokenizer.save(Path(tmp) / "genloom_tokenizer.json")
        ref_model, _ = load_hf_gpt2(tmp)
    r_eval = perplexity(ref_model, val, context=256, stride=128)
    report("quality", [{
        "case": "quality-kjv-val-loss",
        "unit": "validation nats/token (lower is better; ratio = peer/genloom)",
        "genloom": round(g_eval["nll_nats_per_token"], 4),
        "peer": round(r_eval["nll_nats_per_token"], 4),
        "ratio": round(r_eval["nll_nats_per_token"] / g_eval["nll_nats_per_token"], 3),
        "seconds": round(seconds, 1),
        "genloom_steps": card.get("step"),
        "peer_steps": ref_steps,
        "genloom_recipe": "configs/kjv.toml (genloom Trainer)",
        "peer_recipe": "transformers GPT2LMHeadModel + nanoGPT shakespeare-char hyperparameters, same wall time",
        "genloom_model": str(model_path),
        "protocol": g_eval["protocol"],
    }])


if __name__ == "__main__":
    main()
