"""Decoding speed: genloom's KV-cached generate against transformers' generate, on the same weights.

Cases: the 10.7M char-shaped model and the GPT-2-small shape (random init), and the bundled text starters
(models/kjv, tang, chat, their trained weights). Both sides run the SAME float32 weights (GPT-2-style
models through genloom.hf into GPT2LMHeadModel, llama-style ones into LlamaForCausalLM); before timing,
logits must agree to 1e-4 and greedy ids at batch 1 must be equal. Greedy, a 32-token prompt, 128 new tokens
(fewer where the context is shorter: the starters' 128-token contexts leave 96), 2 threads, eval mode and
inference_mode; transformers is held to the full length by min_new_tokens. All sides of a case are
interleaved (the check run is the warm-up, then 3 rounds, the order rotating); best and median reported.

Extra genloom sides: `--compile` (the compiled decode step; compile_s = its first run minus its best) and
`--dtypes` bfloat16,int8 on `--dtype-cases` (dtypes this CPU cannot run are named and skipped). Every row
states the memory-bandwidth bound: the weight bytes one decode step reads (step_bytes) over the copy
bandwidth this script measures (copy_gbps, STREAM's count: bytes read + written, 256 MiB buffers), times
the batch; fraction_of_bound = tokens/s over that bound.

    python bench/decode.py                                   # every case at batch 1, dtypes on GPT-2-small
    python bench/decode.py --cases char10M,kjv,tang,chat --dtype-cases char10M --compile
    python bench/decode.py --quick                           # fewer tokens and repeats, for a fast check
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch
import transformers

from bench.common import interleaved, pair, report
from genloom.checkpoints import load_model
from genloom.hf import hf_config_from_gpt2, state_dict_to_hf
from genloom.models import runtime
from genloom.models.gpt import GPT, GPTConfig
from genloom.sample import SamplingParams, stream_ids

CASES = {
    "char10M": dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384),
    "gpt2-124M": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
}
STARTERS = ("kjv", "tang", "chat")  # the bundled text starters in models/, decoded with their trained weights
PROMPT_LEN = 32


def llama_to_hf(ours: GPT):
    """transformers' LlamaForCausalLM holding a genloom llama-arch GPT's weights (q/k/v and gate/up split)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = ours.config
    hs = c.n_embd // c.n_head
    theirs = LlamaForCausalLM(LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.mlp_hidden, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head, head_dim=hs, max_position_embeddings=c.block_size,
        rms_norm_eps=c.norm_eps, rope_theta=c.rope_theta, tie_word_embeddings=c.tie_weights, attention_bias=c.bias,
        mlp_bias=c.bias, hidden_act="silu", bos_token_id=None, eos_token_id=None, pad_token_id=None))
    sd = {"model.embed_tokens.weight": ours.transformer.wte.weight, "model.norm.weight": ours.transformer.ln_f.weight,
          "lm_head.weight": ours.lm_head.weight}
    for i, b in enumerate(ours.transformer.h):
        pre = f"model.layers.{i}."
        sd[pre + "input_layernorm.weight"], sd[pre + "post_attention_layernorm.weight"] = b.ln_1.weight, b.ln_2.weight
        sizes = [c.n_head * hs, c.n_kv_head * hs, c.n_kv_head * hs]
        for kind in ("weight", "bias") if c.bias else ("weight",):
            q, k, v = getattr(b.attn.c_attn, kind).split(sizes)
            sd[pre + f"self_attn.q_proj.{kind}"], sd[pre + f"self_attn.k_proj.{kind}"] = q, k
            sd[pre + f"self_attn.v_proj.{kind}"] = v
            sd[pre + f"self_attn.o_proj.{kind}"] = getattr(b.attn.c_proj, kind)
            gate, up = getattr(b.mlp.c_fc, kind).chunk(2)
            sd[pre + f"mlp.gate_proj.{kind}"], sd[pre + f"mlp.up_proj.{kind}"] = gate, up
            sd[pre + f"mlp.down_proj.{kind}"] = getattr(b.mlp.c_proj, kind)
    theirs.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True)
    return theirs.eval()


def build(name: str):
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    if name in STARTERS:
        ours = load_model(ROOT / "models" / name).model.float().eval()
    else:
        ours = GPT(GPTConfig(**CASES[name], dropout=0.0, bias=True, arch="gpt2")).eval()
    if ours.config.arch == "llama":
        return ours, llama_to_hf(ours)
    eos = 50256 if ours.config.vocab_size == 50257 else None  # GPT-2's end-of-text; the others have none here
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


def copy_gbps(mib: int = 256, repeat: int = 5) -> float:
    """Memory bandwidth as STREAM's copy counts it: (bytes read + bytes written) / s, best of `repeat`, on a
    buffer far larger than the cache, with the script's threads."""
    a = torch.ones(mib * 2**20 // 4)
    b = torch.empty_like(a)
    b.copy_(a)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.numel() * 4 / best / 1e9


def step_bytes(model) -> int:
    """Bytes of weights one decode step reads: every block tensor, the final norm and the output head (an
    int8 Linear counts its int8 matrix, float32 scales and bias); the embeddings' single rows are left out."""
    total = 0
    for m in [*model.transformer.h.modules(), model.transformer.ln_f, model.lm_head]:
        if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
            w, b = m.weight(), m.bias()
            total += w.numel() + 4 * w.size(0) + (b.numel() * b.element_size() if b is not None else 0)
        else:
            total += sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
    return total


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
    ap.add_argument("--cases", default=",".join([*CASES, *STARTERS]), help="comma-separated: " + ", ".join([*CASES, *STARTERS]))
    ap.add_argument("--batches", default="1", help="comma-separated batch sizes (e.g. 1,8)")
    ap.add_argument("--dtypes", default="bfloat16,int8", help="extra genloom weight dtypes, timed on --dtype-cases")
    ap.add_argument("--dtype-cases", default="gpt2-124M")
    ap.add_argument("--compile", action="store_true", help="also time genloom with its compiled decode step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="lm_head_share: profile one genloom run per case")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    N = 32 if args.quick else 128
    repeat = 2 if args.quick else 3
    gbps = copy_gbps()
    dtypes = [d for d in args.dtypes.split(",") if d and d in runtime.supported_dtypes()]
    skipped = [d for d in args.dtypes.split(",") if d and d not in dtypes]

    rows = []
    for name in args.cases.split(","):
        ours, theirs = build(name)
        new = min(N, ours.config.block_size - PROMPT_LEN)  # the starters' contexts are 128 tokens
        params = ours.num_params(non_embedding=False)
        g = torch.Generator().manual_seed(1)
        probe = torch.randint(0, ours.config.vocab_size, (2, PROMPT_LEN), generator=g)
        diff = check_logits(ours, theirs, probe)
        variants = {"genloom": ours}
        if args.compile:
            variants["genloom_compiled"] = runtime.compile_decode(copy.deepcopy(ours))
        if name in args.dtype_cases.split(","):
            for d in dtypes:
                variants[f"genloom_{d}"] = runtime.to_dtype(copy.deepcopy(ours), d)
        for B in [int(b) for b in args.batches.split(",")]:
            ids = torch.randint(0, ours.config.vocab_size, (B, PROMPT_LEN), generator=g)
            b = run_hf(theirs, ids, new)
            firsts, same = {}, {}
            for side, model in variants.items():  # the check doubles as the warm-up (and the compile)
                t0 = time.perf_counter()
                a = run_genloom(model, ids, new)
                firsts[side] = time.perf_counter() - t0
                if a.shape != b.shape or a.size(1) != new:
                    raise SystemExit(f"{name} b{B} {side}: token counts differ, {tuple(a.shape)} vs {tuple(b.shape)}")
                same[side] = round(float((a == b).float().mean()), 3)
            if B == 1 and same["genloom"] < 1:
                raise SystemExit(f"{name} b1: greedy ids differ between genloom and transformers")
            fns = {side: (lambda m=model: run_genloom(m, ids, new)) for side, model in variants.items()}
            t = interleaved({**fns, "peer": lambda: run_hf(theirs, ids, new)}, repeat, warmup=0)
            head = lm_head_share(ours, ids, new) if args.profile else None
            base = {
                "peer_name": f"transformers {transformers.__version__} {type(theirs).__name__}.generate",
                "peer_settings": f"greedy, use_cache, min_new_tokens=max_new_tokens, eos_token_id "
                f"{theirs.generation_config.eos_token_id} kept, attn {theirs.config._attn_implementation}, float32",
                "params": params, "batch": B, "prompt_tokens": PROMPT_LEN, "new_tokens": new,
                "logits_max_diff": float(f"{diff:.3g}"), "copy_gbps": round(gbps, 1), "quick": args.quick,
            }
            for side, model in variants.items():
                dtype = side.removeprefix("genloom_") if side.startswith("genloom_") and side != "genloom_compiled" \
                    else "float32"
                row = pair(f"decode-{name}-b{B}" + ("" if side == "genloom" else f"-{side.removeprefix('genloom_')}"),
                           "tokens/s", new * B, t[side], t["peer"], **base)
                nbytes = step_bytes(model)
                bound = gbps * 1e9 / nbytes * B  # tokens/s if a step cost only its weight reads
                row.update(dtype=dtype, compiled=side == "genloom_compiled", greedy_ids_equal_fraction=same[side],
                           weight_bytes_per_step=nbytes, bandwidth_bound_tokens_per_s=round(bound, 1),
                           fraction_of_bound=round(row["genloom"] / bound, 3))
                if side == "genloom":
                    row["lm_head_share"] = head
                if side == "genloom_compiled":
                    row["compile_s"] = round(firsts[side] - min(t[side]), 1)  # first run minus a warm one
                rows.append(row)
                print(f"# {row['case']}: genloom {row['genloom']} vs transformers {row['peer']} tokens/s "
                      f"({row['ratio']:.2f}x; {row['fraction_of_bound']:.0%} of the {bound:.0f} tokens/s bound)",
                      flush=True)
        report("decode-quick" if args.quick else "decode", rows, keep_others=True)  # saved case by case
        rows = []
        del ours, theirs, variants
    if skipped:
        print(f"# dtypes not supported on this machine, not timed: {', '.join(skipped)}")


if __name__ == "__main__":
    main()
