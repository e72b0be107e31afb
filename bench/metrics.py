"""Evaluation metrics: genloom's FID/KID against torchmetrics on the same features, and what FID says.

Cases (one JSON line each, bench/results/metrics.jsonl):
  metrics-fid-value-*   FID of a set pair, genloom vs torchmetrics FrechetInceptionDistance fed the same
                        genloom features (ratio ~ 1.0 is parity); the sets: Fashion-MNIST train vs test (the
                        floor) and test vs degraded train images (noise, blur), with the shipped feature network.
  metrics-fid-speed     FID from 10k x 128-d features, features/s, genloom vs torchmetrics (higher is better).
  metrics-kid-speed     KID, 100 subsets of 1,000, genloom vs torchmetrics.
  metrics-bleu-speed    corpus BLEU of 2,000 segments, genloom.metrics.textgen.bleu vs sacrebleu directly
                        (genloom wraps sacrebleu: the ratio shows the wrapper's cost).

    python bench/metrics.py          (about 2 minutes on 2 cores; needs models/fmnist-features)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from bench.common import report
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


def tm_fid(real: np.ndarray, fake: np.ndarray) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    table = np.concatenate([real, fake])
    m = FrechetInceptionDistance(feature=Given(table), normalize=False)
    m.update(torch.arange(len(real)), real=True)
    m.update(torch.arange(len(real), len(table)), real=False)
    return float(m.compute())


def tm_kid(real: np.ndarray, fake: np.ndarray) -> float:
    from torchmetrics.image.kid import KernelInceptionDistance

    table = np.concatenate([real, fake])
    m = KernelInceptionDistance(feature=Given(table), subsets=100, subset_size=1000, normalize=False)
    m.update(torch.arange(len(real)), real=True)
    m.update(torch.arange(len(real), len(table)), real=False)
    return float(m.compute()[0])


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None, :]) / 256
    y = torch.nn.functional.conv2d(x.float(), k.view(1, 1, 5, 5), padding=2)
    return y.round().clamp(0, 255).to(torch.uint8)


def main():
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
    _, t_ours = timed(lambda: fid(f_test, f_sub))
    _, t_tm = timed(lambda: tm_fid(f_test, f_sub))
    rows.append({"case": "metrics-fid-speed", "unit": "features/s (20k x 128-d)", "genloom": round(2 * N / t_ours),
                 "peer": round(2 * N / t_tm), "peer_name": "torchmetrics FrechetInceptionDistance (float64)"})
    _, t_ours = timed(lambda: kid(f_test, f_sub, 100, 1000))
    _, t_tm = timed(lambda: tm_kid(f_test, f_sub))
    rows.append({"case": "metrics-kid-speed", "unit": "subsets/s (100 x 1,000)", "genloom": round(100 / t_ours, 1),
                 "peer": round(100 / t_tm, 1), "peer_name": "torchmetrics KernelInceptionDistance"})

    import sacrebleu

    from genloom.data.evalsets import translation_eval_set
    from genloom.metrics.textgen import bleu

    pairs = translation_eval_set(limit=2000)
    hyps = [p["prompt"][4:-4] for p in pairs]  # the English source as a (bad) Spanish hypothesis
    refs = [p["reference"] for p in pairs]
    res, t_ours = timed(lambda: bleu(hyps, refs))
    ref_score, t_sb = timed(lambda: sacrebleu.corpus_bleu(hyps, [refs]))
    rows.append({"case": "metrics-bleu-speed", "unit": "segments/s", "genloom": round(len(hyps) / t_ours),
                 "peer": round(len(hyps) / t_sb), "peer_name": "sacrebleu.corpus_bleu",
                 "bleu_genloom": round(res["bleu"], 4), "bleu_sacrebleu": round(ref_score.score, 4),
                 "signature": res["signature"], "note": "copy-the-English baseline on the held-out EN-ES verses"})
    report("metrics", rows)


if __name__ == "__main__":
    main()
