"""Evaluation metrics: genloom's FID/KID against torchmetrics on the same features, and what FID says.

Cases (one JSON line each, bench/results/metrics.jsonl):
  metrics-fid-value-*   FID of a set pair, genloom vs torchmetrics FrechetInceptionDistance fed the same
                        genloom features (ratio ~ 1.0 is parity); the sets: Fashion-MNIST train vs test (the
                        floor) and test vs degraded train images (noise, blur), with the shipped feature network.
  metrics-fid-speed     FID from 10k + 10k 128-d features, features/s, genloom vs torchmetrics (higher is better).
  metrics-kid-speed     KID, 100 subsets of 1,000, genloom vs torchmetrics.
  metrics-bleu-speed    corpus BLEU of the held-out segments, genloom.metrics.textgen.bleu vs sacrebleu directly
                        (genloom wraps sacrebleu: the ratio shows the wrapper's cost).

Speed rows time like with like: both sides get the same precomputed features; the torchmetrics module (and
its feature table) is built once, outside the timed region, and each timed call is reset + update(real) +
update(fake) + compute, against one genloom call from the same features. Calls are interleaved (the order
rotates every round), --repeat rounds after one warm-up round; genloom/peer = best, *_median = median.

    python bench/metrics.py [--repeat 15]    (about 2 minutes on 2 cores; needs models/fmnist-features)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from bench.common import interleaved, pair, report
from genloom.data.images import load_images
from genloom.metrics.features import load_feature_extractor
from genloom.metrics.image import fid, kid

N = 10_000


class Given(torch.nn.Module):
    """Hands precomputed features to torchmetrics: input is an index tensor into the feature table."""

    def __init__(self, table: np.ndarray):
        super().__init__()
        self.table = torch.from_numpy(table)
        self.num_features = table.shape[1]

    def forward(self, idx):
        return self.table[idx.long().view(-1)]


class TM:
    """A torchmetrics FID or KID module built once over a (real, fake) feature pair; calling it computes the
    metric from scratch (reset, both updates, compute), which is the work one genloom call does."""

    def __init__(self, kind: str, real: np.ndarray, fake: np.ndarray):
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        table = Given(np.concatenate([real, fake]))
        self.m = (FrechetInceptionDistance(feature=table, normalize=False) if kind == "fid" else
                  KernelInceptionDistance(feature=table, subsets=100, subset_size=1000, normalize=False))
        self.real, self.fake = torch.arange(len(real)), torch.arange(len(real), len(real) + len(fake))

    def __call__(self) -> float:
        self.m.reset()
        self.m.update(self.real, real=True)
        self.m.update(self.fake, real=False)
        out = self.m.compute()
        return float(out[0] if isinstance(out, tuple) else out)


def tm_fid(real: np.ndarray, fake: np.ndarray) -> float:
    return TM("fid", real, fake)()


def blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None, :]) / 256
    y = torch.nn.functional.conv2d(x.float(), k.view(1, 1, 5, 5), padding=2)
    return y.round().clamp(0, 255).to(torch.uint8)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15, help="timed rounds per speed case (>= 3)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    ext = load_feature_extractor("models/fmnist-features")
    test = load_images("fashion-mnist", "test").images
    train = load_images("fashion-mnist", "train").images
    sub = train[torch.randperm(len(train))[:N]]
    noisy = (sub.float() + 25.5 * torch.randn(sub.shape)).round().clamp(0, 255).to(torch.uint8)
    t0 = time.perf_counter()
    f_test = ext.features(test)
    feat_s = time.perf_counter() - t0
    sets = {"floor-train-vs-test": sub, "noise-sigma0.1": noisy, "blur-5x5": blur(sub)}
    rows = []
    for name, imgs in sets.items():
        f = ext.features(imgs)
        ours = fid(f_test, f, feature_net=ext.describe())
        theirs = tm_fid(f_test, f)
        rows.append({"case": f"metrics-fid-value-{name}", "unit": "FID (same features both sides)",
                     "genloom": round(ours["fid"], 4), "peer": round(theirs, 4), "peer_name": "torchmetrics FID",
                     "protocol": ours["protocol"], "feature_extraction_images_per_s": round(len(test) / feat_s, 1)})
    f_sub = ext.features(sub)
    t = interleaved({"genloom": lambda: fid(f_test, f_sub), "peer": TM("fid", f_test, f_sub)}, args.repeat)
    rows.append(pair("metrics-fid-speed", "features/s (10k real + 10k fake, 128-d)", 2 * N, t["genloom"], t["peer"],
                     digits=0, peer_name="torchmetrics FrechetInceptionDistance (float64), module built untimed"))
    t = interleaved({"genloom": lambda: kid(f_test, f_sub, 100, 1000), "peer": TM("kid", f_test, f_sub)}, args.repeat)
    rows.append(pair("metrics-kid-speed", "subsets/s (100 x 1,000)", 100, t["genloom"], t["peer"],
                     peer_name="torchmetrics KernelInceptionDistance, module built untimed"))

    import sacrebleu

    from genloom.data.evalsets import translation_eval_set
    from genloom.metrics.textgen import bleu

    pairs = translation_eval_set(limit=2000)
    hyps = [p["prompt"][4:-4] for p in pairs]  # the English source as a (bad) Spanish hypothesis
    refs = [p["reference"] for p in pairs]
    res, ref_score = bleu(hyps, refs), sacrebleu.corpus_bleu(hyps, [refs])
    t = interleaved({"genloom": lambda: bleu(hyps, refs), "peer": lambda: sacrebleu.corpus_bleu(hyps, [refs])},
                    args.repeat)
    rows.append(pair("metrics-bleu-speed", f"segments/s ({len(hyps)} segments)", len(hyps), t["genloom"], t["peer"],
                     digits=0, peer_name="sacrebleu.corpus_bleu", bleu_genloom=round(res["bleu"], 4),
                     bleu_sacrebleu=round(ref_score.score, 4), signature=res["signature"],
                     note="copy-the-English baseline on the held-out EN-ES verses"))
    report("metrics", rows)


if __name__ == "__main__":
    main()
