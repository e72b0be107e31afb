"""Decoding speed: genloom's KV-cached generate against transformers' GPT2LMHeadModel.generate.

Both sides run the SAME fp32 weights (a random-init genloom GPT converted with genloom.hf), greedy,
a 32-token prompt and exactly N new tokens (default 128), batch 1 and batch 8, 2 threads,
model.eval() and torch.inference_mode(). Before timing, each case checks that the logits agree to
1e-4, that both sides produce the same number of tokens and that greedy ids match at batch 1.
genloom and transformers runs are interleaved (the check run is the warmup, then 3 rounds, the order
alternating) so machine noise hits both; genloom/peer = best, *_median = median. Metric: new tokens * batch / seconds. genloom runs stream_ids (what generate
drives) with stop_at_eot off; transformers keeps GPT-2's eos (50256) on the 124M shape (none on the char
model) and is held to the full length by min_new_tokens. lm_head_share: the output projection's part of genloom's time (profiled).

    python bench/decode.py            # full run -> bench/results/decode.jsonl
    python bench/decode.py --quick    # fewer tokens and repeats, for a fast check
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import transformers

from bench.common import interleaved, pair, report
from genloom.hf import hf_config_from_gpt2, state_dict_to_hf
from genloom.models.gpt import GPT, GPTConfig
from genloom.sample import SamplingParams, stream_ids

CASES = {
    "char10M": dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384),
    "gpt2-124M": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
}
PROMPT_LEN = 32


def build(shape: dict):
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    ours = GPT(GPTConfig(**shape, dropout=0.0, bias=True, arch="gpt2")).eval()
    eos = 50256 if ours.config.vocab_size == 50257 else None  # GPT-2's end-of-text; the char model has none
    theirs = GPT2LMHeadModel(GPT2Config(**hf_config_from_gpt2(ours.config, eos))).eval()
    missing, unexpected = theirs.load_state_dict(state_dict_to_hf(ours), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise SystemExit(f"weights did not convert: missing {missing[:3]}, unexpected {unexpected[:3]}")
    theirs.tie_weights()
    assert torch.equal(theirs.lm_head.weight, ours.lm_head.weight)  # tied to wte on both sides
    # transformers keeps GPT-2's eos (50256) on the 124M shape; min_new_tokens = max_new_tokens (below) makes it
    # run the full length. pad_token_id = eos is what generate would pick itself (set here to skip its warning).
    theirs.generation_config.pad_token_id = theirs.generation_config.eos_token_id
    return ours, theirs


def check_logits(ours, theirs, ids) -> float:
    with torch.inference_mode():
        a = ours(ids)[0]
        b = theirs(ids).logits
    diff = (a - b).abs().max().item()
    if diff > 1e-4:
        raise SystemExit(f"logits differ by {diff:.3g} (> 1e-4): the two models are not the same")
    return diff


def run_genloom(model, ids: torch.Tensor, new: int) -> torch.Tensor:
    sp = SamplingParams(max_new_tokens=new, temperature=0.0, stop_at_eot=False)
    out = [tok for _, tok in stream_ids(model, ids.tolist(), sp, eot_id=None)]
    return torch.stack(out, dim=1)  # (B, new)


def run_hf(model, ids: torch.Tensor, new: int) -> torch.Tensor:
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            use_cache=True,
            max_new_tokens=new,
            min_new_tokens=new,
            num_beams=1,
        )
    return out[:, ids.size(1) :]


def lm_head_share(model, ids: torch.Tensor, new: int) -> float:
    """Fraction of genloom's generate time spent in the output projection, from one profiled run.

    The step's only bias-free matmul is lm_head (aten::mm; the block projections are aten::addmm), so
    mm self-time over the total is its share; the profiler's per-op overhead makes it a lower bound.
    """
    from torch.profiler import profile

    with profile() as prof:
        run_genloom(model, ids, new)
    ev = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ev)
    mm = sum(e.self_cpu_time_total for e in ev if e.key == "aten::mm")
    return round(mm / total, 3)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 new tokens, fewer repeats")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    new = 32 if args.quick else 128
    repeat = 2 if args.quick else 3

    rows = []
    for name in args.cases.split(","):
        ours, theirs = build(CASES[name])
        params = ours.num_params(non_embedding=False)
        g = torch.Generator().manual_seed(1)
        probe = torch.randint(0, ours.config.vocab_size, (2, PROMPT_LEN), generator=g)
        diff = check_logits(ours, theirs, probe)
        for B in [int(b) for b in args.batches.split(",")]:
            ids = torch.randint(0, ours.config.vocab_size, (B, PROMPT_LEN), generator=g)
            a, b = run_genloom(ours, ids, new), run_hf(theirs, ids, new)  # the check doubles as warmup
            if a.shape != b.shape or a.size(1) != new:
                raise SystemExit(f"{name} b{B}: token counts differ, {tuple(a.shape)} vs {tuple(b.shape)}")
            same = bool(torch.equal(a, b))
            if B == 1 and not same:
                raise SystemExit(f"{name} b1: greedy ids differ between genloom and transformers")
            t = interleaved({"genloom": lambda: run_genloom(ours, ids, new), "peer": lambda: run_hf(theirs, ids, new)},
                            repeat, warmup=0)  # the check above was the warm-up
            head = None if args.quick else lm_head_share(ours, ids, new)
            rows.append(
                {
                    **pair(f"decode-{name}-b{B}", "tokens/s", new * B, t["genloom"], t["peer"]),
                    "peer_name": f"transformers {transformers.__version__} GPT2LMHeadModel.generate",
                    "peer_settings": f"greedy, use_cache, min_new_tokens=max_new_tokens, eos_token_id "
                    f"{theirs.generation_config.eos_token_id} kept, attn {theirs.config._attn_implementation}",
                    "params": params,
                    "batch": B,
                    "prompt_tokens": PROMPT_LEN,
                    "new_tokens": new,
                    "dtype": "float32",
                    "greedy_ids_equal": same,
                    "logits_max_diff": float(f"{diff:.3g}"),
                    "lm_head_share": head,
                    "quick": args.quick,
                }
            )
            r = rows[-1]
            ratio = r["genloom"] / r["peer"]
            print(f"# {r['case']}: genloom {r['genloom']} vs transformers {r['peer']} tokens/s ({ratio:.2f}x)")
        del ours, theirs
    report("decode-quick" if args.quick else "decode", rows)


if __name__ == "__main__":
    main()
