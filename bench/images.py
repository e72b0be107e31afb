"""Image generation: steps versus quality of the Fashion-MNIST diffusion starter, and sampling speed.

Cases (bench/results/images.jsonl):
  sample-ddim-<steps>   FID of N class-balanced samples (DDIM, eta 0, guidance G) against the Fashion-MNIST
                        test split on genloom's own feature network (models/fmnist-features, 128-d: no
                        Inception weights install offline), with the train-vs-test floor at the same N; the
                        time per image. genloom = FID, peer = the floor (ratio = floor / FID: 1.0 would be a
                        perfect generator).
  sample-speed-ddim-50  images/s at batch 64, genloom's DDIM loop vs diffusers' DDIMScheduler loop driving
                        the same U-Net with the same number of network calls (ratio: higher is better).

    python bench/images.py [--n 500] [--model runs/fmnist-diffusion]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.common import report
from genloom.data.images import load_images
from genloom.metrics.features import load_feature_extractor
from genloom.metrics.image import fid
from genloom.store import load_model


def diffusers_ddim(model, n: int, steps: int, labels, guidance: float, seed: int) -> torch.Tensor:
    from diffusers import DDIMScheduler

    c = model.config
    sched = DDIMScheduler(num_train_timesteps=c.num_train_timesteps, beta_schedule="linear", clip_sample=False)
    sched.set_timesteps(steps)
    x = torch.randn(n, c.channels, c.image_size, c.image_size, generator=torch.Generator().manual_seed(seed))
    null = torch.full_like(labels, c.num_classes)
    with torch.no_grad():
        for t in sched.timesteps:
            tt = torch.full((n,), int(t), dtype=torch.long)
            out = model.ema(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null]))
            cond, uncond = out.chunk(2)
            x = sched.step(uncond + guidance * (cond - uncond), int(t), x).prev_sample
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="runs/fmnist-diffusion")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--steps", default="10,20,50,100")
    ap.add_argument("--guidance", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    lm = load_model(args.model)
    ext = load_feature_extractor("models/fmnist-features")
    test = load_images("fashion-mnist", "test").images
    train = load_images("fashion-mnist", "train").images
    f_test = ext.features(test)
    n = args.n
    floor = fid(f_test, ext.features(train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]]))
    labels = torch.arange(n) % 10  # class-balanced
    rows = []
    for steps in [int(s) for s in args.steps.split(",")]:
        t0 = time.perf_counter()
        imgs = torch.cat([lm.model.sample(len(chunk), seed=1000 + i, sampler="ddim", steps=steps, labels=chunk,
                                          guidance=args.guidance) for i, chunk in enumerate(labels.split(100))])
        secs = time.perf_counter() - t0
        res = fid(f_test, ext.features(imgs), feature_net=ext.describe())
        rows.append({"case": f"sample-ddim-{steps}", "unit": "FID (lower is better); peer = train-vs-test floor",
                     "genloom": round(res["fid"], 3), "peer": round(floor["fid"], 3),
                     "ratio": round(floor["fid"] / res["fid"], 4), "steps": steps, "n": n, "guidance": args.guidance,
                     "seconds_per_image": round(secs / n, 4), "protocol": res["protocol"],
                     "floor_protocol": f"FID of {n} random train images vs the {len(test)} test images, same features"})
        print(rows[-1], flush=True)
    batch = labels[:64]
    t0 = time.perf_counter()
    ours = lm.model.sample(64, seed=7, sampler="ddim", steps=50, labels=batch, guidance=args.guidance)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = diffusers_ddim(lm.model, 64, 50, batch, args.guidance, seed=7)
    t_theirs = time.perf_counter() - t0
    rows.append({"case": "sample-speed-ddim-50", "unit": "images/s (batch 64, 50 DDIM steps, guidance 2 = 2 U-Net "
                 "passes per step)", "genloom": round(64 / t_ours, 2), "peer": round(64 / t_theirs, 2),
                 "peer_name": "diffusers DDIMScheduler loop, same U-Net and latents",
                 "max_pixel_diff": int((ours.int() - theirs.int()).abs().max())})
    report("images", rows)


if __name__ == "__main__":
    main()
