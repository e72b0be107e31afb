"""Moderation quality and latency: genloom-moderation-2 against the first version (genloom-moderation-1) on the
held-out test split of genloom's labelled set (genloom/data/assets/moderation/test.jsonl, version 3: the hand-written
English and Chinese lines of genloom/safety/moderation_heldout.py, never used for training or for tuning thresholds;
its README.md is the datasheet). Each run reads the held-out set: list every run in bench/RESULTS.md.

Per language: precision, recall and false-positive rate of `flagged` (any category) against "has any label";
per category: recall on the examples carrying it. Latency: one request of one text (the median and p90 over the
first 100 test texts, after a warm-up), both models interleaved, 1 thread unless --threads. Goal (issue 14):
recall >= 0.85 and FPR <= 0.05 in each language.

    python bench/moderation.py                 # JSON lines, saved to bench/results/moderation.jsonl
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report

from genloom.data.moderation import CATEGORIES, LANGS, read_split
from genloom.safety.moderation import FIRST, MODEL, moderate

DATA = Path(__file__).resolve().parents[1] / "genloom" / "data" / "assets" / "moderation"


def figures(rows: list[dict], results: list[dict]) -> dict:
    out = {}
    for lang in LANGS:
        pairs = [(bool(r["labels"]), bool(res["flagged"])) for r, res in zip(rows, results) if r["lang"] == lang]
        tp = sum(y and f for y, f in pairs)
        fp = sum(f and not y for y, f in pairs)
        fn = sum(y and not f for y, f in pairs)
        tn = sum(not y and not f for y, f in pairs)
        out[lang] = {"precision": round(tp / max(1, tp + fp), 4), "recall": round(tp / max(1, tp + fn), 4),
                     "fpr": round(fp / max(1, fp + tn), 4), "harmful": tp + fn, "benign": fp + tn}
    per_cat = {}
    for c in CATEGORIES:
        hits = [bool(res["categories"].get(c)) for r, res in zip(rows, results) if c in r["labels"]]
        per_cat[c] = {"recall": round(sum(hits) / len(hits), 4) if hits else None, "n": len(hits)}
    out["category_recall"] = per_cat
    return out


def latency(texts: list[str]) -> dict[str, dict]:
    times = {MODEL: [], FIRST: []}
    for m in times:
        moderate(texts[:2], m)  # warm-up: loads the models
    for i, t in enumerate(texts):
        for m in (list(times) if i % 2 == 0 else list(times)[::-1]):
            t0 = time.perf_counter()
            moderate([t], m)
            times[m].append(1000 * (time.perf_counter() - t0))
    return {m: {"median_ms": round(statistics.median(v), 2),
                "p90_ms": round(sorted(v)[int(0.9 * len(v)) - 1], 2), "requests": len(v)} for m, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--latency-texts", type=int, default=100)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = read_split(DATA, "test")
    texts = [r["text"] for r in rows]
    out = []
    scored = {m: moderate(texts, m) for m in (MODEL, FIRST)}
    lat = latency(texts[:a.latency_texts])
    for m, results in scored.items():
        figs = figures(rows, results)
        goal = all(figs[lang]["recall"] >= 0.85 and figs[lang]["fpr"] <= 0.05 for lang in LANGS)
        out.append({"case": f"heldout-{m}", "model": m, "split": "test", "examples": len(rows), **figs,
                    "latency_1_text": lat[m], "goal_met": goal})
    def ratio(lang):  # None when the first version catches nothing (zh): no ratio to speak of
        old = out[1][lang]["recall"]
        return round(out[0][lang]["recall"] / old, 3) if old else None

    out.append({"case": "ratio", "recall_en": ratio("en"), "recall_zh": ratio("zh"),
                "latency": round(lat[MODEL]["median_ms"] / lat[FIRST]["median_ms"], 3)})
    report("moderation", out)


if __name__ == "__main__":
    main()
