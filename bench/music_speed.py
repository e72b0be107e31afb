"""Music speed: sampling a piece (tokens/s, and seconds of music per second of compute) and rendering it to WAV
with FluidSynth (seconds of audio per second of compute), each against real time as the peer.

The peer is the clock, not another program: ratio = seconds of music made per second of wall time, so above 1
means faster than real time (a player could stream it). Sampling: `genloom.pipelines.music.compose` on the model
(default models/chorales), an 8-bar piece without a primer, temperature 0.9, seeds 0..R-1 (one piece per round),
one process, 1 torch thread by default (--threads). Rendering: `render_wav` (the fluidsynth CLI, 44.1 kHz, TimGM6mb) on those
pieces' MIDI. Best and median over the rounds.

    python bench/music_speed.py                 # -> bench/results/music_speed.jsonl
    python bench/music_speed.py --bars 4 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.common import report
from genloom.checkpoints import load_model
from genloom.pipelines import music


def row(case: str, unit: str, rates: list[float], **extra) -> dict:
    best, median = max(rates), statistics.median(rates)
    return {"case": case, "unit": unit, "genloom": round(best, 2), "peer": 1.0, "ratio": round(best, 3),
            "genloom_median": round(median, 2), "peer_median": 1.0, "ratio_median": round(median, 3),
            "repeats": len(rates), "stat": "best and median of rounds; peer = real time", **extra}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "models" / "chorales"))
    ap.add_argument("--bars", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: batch-1 decoding of a 0.8M model gains nothing from a second thread, and on a loaded machine its wake-ups dominate)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(args.model)
    music.compose(lm, music.MusicOptions(bars=1, seed=999))  # warm-up
    pieces, tok_rates, music_rates, render_rates = [], [], [], []
    for seed in range(args.repeat):
        piece = music.compose(lm, music.MusicOptions(bars=args.bars, seed=seed, temperature=0.9))
        pieces.append(piece)
        tok_rates.append(piece.new_tokens / piece.compute_seconds)
        music_rates.append((piece.seconds) / piece.compute_seconds)
    for piece in pieces:
        midi = piece.midi()
        t0 = time.perf_counter()
        music.render_wav(midi)
        render_rates.append(piece.seconds / (time.perf_counter() - t0))
    params = sum(p.numel() for p in lm.model.parameters())
    common = {"model": Path(args.model).name, "parameters": params, "bars": args.bars,
              "music_seconds": [round(p.seconds, 2) for p in pieces], "tokens": [p.new_tokens for p in pieces]}
    tps = row("music-sample-tokens", "tokens/s", tok_rates, **common)
    tps.update(peer=None, ratio=None, peer_median=None, ratio_median=None, stat="best and median of rounds; no peer")
    report("music_speed", [
        tps,
        row("music-sample-realtime", "s of music / s of compute", music_rates, **common),
        row("music-render-wav", "s of audio / s of compute", render_rates, soundfont=music.soundfont().name,
            sample_rate=music.SAMPLE_RATE, **common),
    ])


if __name__ == "__main__":
    main()
