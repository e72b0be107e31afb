"""The serving engine without a server: the ceiling of bench/serve.py's 64-token ratio on this machine.

bench/serve.py compares the same server at max_batch 16 and 1 over HTTP; this drives genloom.serve.engine.TextEngine
by hand (no HTTP, no event loop, no clients) with what that case sends: models/chat as `genloom serve` loads it,
its chat template over bench/serve.py's prompts, the watermark on (a fixed key), greedy, min_tokens = max_tokens
= 64, on decode_threads(2) = 1 intra-op thread.
Case serve-engine-16-rows: 16 requests decoded together, against the same 16 requests one at a time (each
submitted when the previous one finished, as the max_batch=1 server runs them). The ratio is what continuous
batching gains in the engine alone; every per-token cost the server adds (framing and writing an SSE chunk, waking
a client's task; about the same per token on both sides) can only bring the served ratio below it.

    python bench/serve_engine.py            # 5 rounds each, interleaved (about 30 s)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report  # noqa: E402
from bench.serve import prompt  # noqa: E402
from genloom.checkpoints import load_model  # noqa: E402
from genloom.models.runtime import default_dtype, prepare  # noqa: E402
from genloom.safety.watermark import Secret, Watermarks  # noqa: E402
from genloom.sample import SamplingParams  # noqa: E402
from genloom.serve.engine import TextEngine, decode_threads  # noqa: E402
from genloom.serve.models import ChatTemplate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOKENS = 64


TEMPLATE = ChatTemplate.load(ROOT / "models" / "chat")


def prompts(n: int, round_: int) -> list[str]:
    """bench/serve.py's chat prompts for `n` clients in one round, rendered with the model's chat template as the
    server renders them."""
    return [TEMPLATE.render([("user", prompt(i, round_))]) for i in range(n)]


def run(engine: TextEngine, texts: list[str], together: bool) -> tuple[float, int]:
    """Seconds to decode every prompt (all at once, or each submitted when the one before it finished) and the
    engine steps it took."""
    sp = SamplingParams(max_new_tokens=TOKENS, min_new_tokens=TOKENS, temperature=0.0)
    steps, t0 = 0, time.perf_counter()
    for group in [texts] if together else [[t] for t in texts]:
        handles = [engine.submit(t, sp) for t in group]
        while not all(h.finished for h in handles):
            engine.step()
            steps += 1
    return time.perf_counter() - t0, steps


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    loaded = load_model(ROOT / "models" / "chat")
    model = prepare(loaded.model, default_dtype(loaded.meta), False, device="cpu")
    marks = Watermarks(Secret(bytes(range(32))))
    threads = decode_threads(2)
    engines = {side: TextEngine(model, loaded.tokenizer, max_batch=b, max_queue=64, name=side, watermarks=marks,
                                threads=threads) for side, b in (("batched", args.rows), ("one", 1))}
    torch.set_num_threads(threads)  # driven from this thread: the worker's setting
    with torch.inference_mode():
        run(engines["batched"], prompts(args.rows, -1), True)  # warm-up
        run(engines["one"], prompts(2, -1), False)
        times = {"batched": [], "one": []}
        steps = {}
        for k in range(args.rounds):
            for side in (("batched", "one") if k % 2 == 0 else ("one", "batched")):
                dt, n = run(engines[side], prompts(args.rows, k), side == "batched")
                times[side].append(dt)
                steps[side] = n
    tokens = args.rows * TOKENS
    best = {s: tokens / min(t) for s, t in times.items()}
    median = {s: tokens / statistics.median(t) for s, t in times.items()}
    report("serve_engine", [{
        "case": f"serve-engine-{args.rows}-rows",
        "unit": "tokens/s",
        "genloom": round(best["batched"], 1),
        "peer": round(best["one"], 1),
        "peer_name": "the same engine, one request at a time (max_batch=1)",
        "ratio": round(best["batched"] / best["one"], 3),
        "genloom_median": round(median["batched"], 1), "peer_median": round(median["one"], 1),
        "ratio_median": round(median["batched"] / median["one"], 3),
        "ms_per_step": round(min(times["batched"]) / steps["batched"] * 1e3, 3),
        "peer_ms_per_step": round(min(times["one"]) / steps["one"] * 1e3, 3),
        "stat": f"best and median of {args.rounds} rounds per side, interleaved",
        "rows": args.rows, "tokens_per_request": TOKENS, "model": "models/chat", "watermark": True,
        "intra_op_threads": threads,
    }])


if __name__ == "__main__":
    main()
