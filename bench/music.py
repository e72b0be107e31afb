"""Music quality: the chorales starter against two baselines on the same split and the same token stream.

starter:  models/chorales (or --model), its validation NLL and samples.
markov:   a note-level Markov chain over the same miditok ids (genloom.models.markov: interpolated absolute
          discounting down to uniform), fitted on the training side's token file (train.bin, the same
          transposed pieces the GPT saw) for each --orders; the order with the lowest validation NLL is THE
          baseline (picking it on the validation split favours the baseline, never the starter).
tenth:    the starter's own run config (its card's run_config: architecture, data, optimiser, batch) trained
          now for a tenth of the steps that made the starter's weights (the card's `step`: the best checkpoint
          of a run that may have stopped on its wall-time budget), the whole schedule compressed with it
          (warm-up, cosine to the last step, eval and checkpoint intervals a tenth too, no time budget);
          its best checkpoint (on the validation loss, as the starter's export was picked).
All three are scored on the prepared folder's val.bin (every piece framed BOS ... EOS, the pieces the split
held out): the GPTs with genloom.metrics.text.perplexity (context = block_size, stride = half), the chain
with up to `order` tokens of history; every token after the first scored once, in nats.
Features: --samples pieces from each model, from BOS, seeds --seed .. --seed + N - 1 (default 0), temperature 1, --tokens tokens each or
until EOS (past a GPT's context a sliding window of half the context), decoded with the data's tokenizer,
cut to the first --bars bars on a 24-tick grid, against the held-out pieces cut the same way: mgeval's
OA and KL per MusPy feature (genloom.metrics.music), then the mean. The training pieces against the held-out
pieces give the floor (what reproducing real chorales scores).
Ratios: NLL baseline / starter (> 1: the starter is better), mean OA starter / baseline (> 1: better).

    python bench/music.py                                   # models/chorales with its data folder
    python bench/music.py --model runs/x/best --samples 16  # another music GPT, fewer samples
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import report  # noqa: E402
from genloom import evaluate as ev  # noqa: E402
from genloom.callbacks import default_callbacks  # noqa: E402
from genloom.checkpoints import load_model  # noqa: E402
from genloom.data import music as music_data  # noqa: E402
from genloom.data.text import TokenData  # noqa: E402
from genloom.families import run_config_from_dict  # noqa: E402
from genloom.metrics import music as mm  # noqa: E402
from genloom.metrics.text import perplexity  # noqa: E402
from genloom.models.markov import MarkovChain  # noqa: E402
from genloom.report import write_report  # noqa: E402
from genloom.train import Trainer  # noqa: E402

OUT = Path(__file__).parent / "results"


def tenth_config(run_config: dict, out_dir: str, steps_trained: int | None = None, fraction: float = 0.1) -> dict:
    """The starter's run config with its steps (default: max_steps) and its warm-up, eval and checkpoint
    intervals cut to a tenth."""
    cfg = copy.deepcopy(run_config)
    t = cfg["train"]
    steps = max(2, round((steps_trained or t["max_steps"]) * fraction))
    t.update(max_steps=steps, warmup_steps=min(steps - 1, round(t.get("warmup_steps", 0) * fraction)),
             eval_interval=max(1, round(t.get("eval_interval", steps) * fraction)),
             ckpt_interval=max(1, round(t.get("ckpt_interval", steps) * fraction)),
             out_dir=out_dir, sample_interval=0, max_minutes=0.0)
    return cfg


def feature_row(name: str, scores: list, ref_feats: dict, bars: int) -> tuple[dict, dict]:
    feats = mm.set_features([ev.crop_bars(s, bars) for s in scores])
    res = mm.compare_sets(feats, ref_feats, candidate_name="the model's samples", reference_name="held-out pieces")
    return feats, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/chorales")
    ap.add_argument("--data", default=None, help="the prepared folder (default: the card's data.dir)")
    ap.add_argument("--orders", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=0, help="tokens per sample (default: 3 x the context)")
    ap.add_argument("--bars", type=int, default=ev.MUSIC_BARS)
    ap.add_argument("--seed", type=int, default=0, help="piece i of every model samples with seed + i")
    ap.add_argument("--tenth", default=None, help="reuse this run folder's best/ as the tenth-steps model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--report", default=str(OUT / "music-report"), help="HTML report of the three sample sets")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()

    lm = load_model(args.model)
    card = lm.meta.get("card") or {}
    run_config = card.get("run_config")
    data_dir = args.data or (run_config or {}).get("data", {}).get("dir")
    if not data_dir or not (Path(data_dir) / "val.bin").is_file():
        d = (run_config or {}).get("data", {})
        data_dir = data_dir or "data/chorales"
        music_data.prepare(d.get("source", "chorales"), data_dir, d.get("tokenizer") or "remi",
                           d.get("val_fraction", 0.05), d.get("split_seed", 1337), d.get("transpose", 3))
    data = TokenData(data_dir)
    if json.dumps(data.tokenizer.to_json()) != json.dumps(lm.tokenizer.to_json()):
        sys.exit(f"{data_dir} was tokenized differently from {args.model}")
    tok = lm.tokenizer
    train_ids, val_ids = np.asarray(data.split("train")), np.asarray(data.split("val"))
    block = lm.config.block_size
    n_tokens = args.tokens or ev.MUSIC_CONTEXTS * block

    held = [ev.crop_bars(s, args.bars) for s in ev.held_out_pieces(data_dir, "val")]
    ref_feats = mm.set_features(held)
    train_pieces = ev.held_out_pieces(data_dir, "train")
    floor = mm.compare_sets(mm.set_features([ev.crop_bars(s, args.bars) for s in train_pieces]), ref_feats,
                            candidate_name="training pieces", reference_name="held-out pieces")

    results, sets = {}, {}
    # the starter
    t0 = time.time()
    nll = perplexity(lm.model, val_ids)
    ids = ev.sample_music(lm.model, tok, args.samples, seed=args.seed, max_tokens=n_tokens)
    sets["starter"] = [tok.decode_score(x) for x in ids]
    results["starter"] = {"nll": nll, "seconds": round(time.time() - t0, 1),
                          "train_steps": (run_config or {}).get("train", {}).get("max_steps"),
                          "best_step": card.get("step")}

    # the Markov chains
    t0 = time.time()
    chains = {}
    for order in args.orders:
        chain = MarkovChain(order, tok.vocab_size).fit(train_ids)
        chains[order] = (chain, chain.nll(val_ids))
    best = min(chains, key=lambda o: chains[o][1]["nll_nats_per_token"])
    chain = chains[best][0]
    sets["markov"] = [tok.decode_score(chain.sample([tok.bos_id], n_tokens, seed=args.seed + i,
                                                    stop={tok.eot_id}))
                      for i in range(args.samples)]
    results["markov"] = {"nll": chains[best][1], "order": best, "seconds": round(time.time() - t0, 1),
                         "nll_by_order": {o: c[1]["nll_nats_per_token"] for o, c in chains.items()}}

    # the same architecture for a tenth of the steps
    t0 = time.time()
    if args.tenth:
        tenth_dir = Path(args.tenth)
    else:
        if run_config is None:
            sys.exit(f"{args.model}'s card has no run_config: pass --tenth RUN_DIR")
        tenth_dir = Path(tempfile.mkdtemp(prefix="music-tenth-"))
        cfg = tenth_config(run_config, str(tenth_dir), card.get("step"))
        cfg["data"]["dir"] = str(data_dir)
        Trainer(run_config_from_dict(cfg), callbacks=default_callbacks(progress=False)).fit()
    tenth = load_model(tenth_dir / "best" if (tenth_dir / "best").is_dir() else tenth_dir)
    tnll = perplexity(tenth.model, val_ids, context=block)
    ids = ev.sample_music(tenth.model, tok, args.samples, seed=args.seed, max_tokens=n_tokens)
    sets["tenth"] = [tok.decode_score(x) for x in ids]
    tcard = tenth.meta.get("card") or {}
    results["tenth"] = {"nll": tnll, "seconds": round(time.time() - t0, 1),
                        "train_steps": (tcard.get("run_config") or {}).get("train", {}).get("max_steps"),
                        "best_step": tcard.get("step")}

    for name, scores in sets.items():
        _, res = feature_row(name, scores, ref_feats, args.bars)
        results[name]["features"] = res
    recipe = (f"{args.samples} pieces per model from BOS, seeds {args.seed}..{args.seed + args.samples - 1}, "
              f"temperature 1, {n_tokens} "
              f"tokens or EOS (GPTs: a sliding window of {block // 2} past the {block}-token context), first "
              f"{args.bars} bars on a {mm.FEATURE_TPQ}-tick grid, against {len(held)} held-out pieces")
    s, m, t = results["starter"], results["markov"], results["tenth"]
    row = {
        "case": "chorales-starter-vs-baselines",
        "unit": "validation NLL nats/token (lower is better); mean feature OA (higher is better)",
        "model": args.model, "data": str(data_dir),
        "val_tokens_scored": s["nll"]["tokens_scored"],
        "nll_starter": round(s["nll"]["nll_nats_per_token"], 4),
        "nll_markov": round(m["nll"]["nll_nats_per_token"], 4),
        "markov_order": m["order"],
        "nll_markov_by_order": {o: round(v, 4) for o, v in m["nll_by_order"].items()},
        "nll_tenth": round(t["nll"]["nll_nats_per_token"], 4),
        "nll_ratio_markov_over_starter": round(m["nll"]["nll_nats_per_token"] / s["nll"]["nll_nats_per_token"], 3),
        "nll_ratio_tenth_over_starter": round(t["nll"]["nll_nats_per_token"] / s["nll"]["nll_nats_per_token"], 3),
        "oa_starter": round(s["features"]["mean_overlap"], 4),
        "oa_markov": round(m["features"]["mean_overlap"], 4),
        "oa_tenth": round(t["features"]["mean_overlap"], 4),
        "oa_floor_train_vs_heldout": round(floor["mean_overlap"], 4),
        "oa_ratio_starter_over_markov": round(s["features"]["mean_overlap"] / m["features"]["mean_overlap"], 3),
        "oa_ratio_starter_over_tenth": round(s["features"]["mean_overlap"] / t["features"]["mean_overlap"], 3),
        "oa_by_feature": {name: {k: round(v["overlap"], 3) for k, v in r["features"]["features"].items()}
                          for name, r in results.items()},
        "starter_beats_both": bool(
            s["nll"]["nll_nats_per_token"] < min(m["nll"]["nll_nats_per_token"], t["nll"]["nll_nats_per_token"])
            and s["features"]["mean_overlap"] > max(m["features"]["mean_overlap"], t["features"]["mean_overlap"])),
        "train_steps": {"starter": s["train_steps"], "tenth": t["train_steps"]},
        "best_step": {"starter": s["best_step"], "tenth": t["best_step"]},
        "protocol": {"nll": {k: r["nll"]["protocol"] for k, r in results.items()}, "samples": recipe,
                     "features": s["features"]["protocol"]},
        "seconds": round(time.time() - t_start, 1),
    }
    report("music", [row])
    sections = []
    held_all, train_all = ev.held_out_pieces(data_dir, "val"), train_pieces
    for name, scores in sets.items():
        sec = ev.music_features_section(name, scores, held_all, train_all, bars=args.bars, what=recipe)
        sec.metrics = {"nll_nats_per_token": results[name]["nll"]["nll_nats_per_token"], **sec.metrics}
        sections.append(sec)
    json_path, html_path = write_report(args.report, sections, title="chorales: starter vs Markov vs tenth steps")
    print(f"report: {html_path}; tenth-steps run: {tenth_dir} (reuse with --tenth)", file=sys.stderr)


if __name__ == "__main__":
    main()
