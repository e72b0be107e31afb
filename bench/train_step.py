"""Training-step throughput: genloom's Trainer step vs a transformers GPT2LMHeadModel step, same config.

The model is the char-level 10M GPT (6 layers, 6 heads, 384 wide, block 256, vocab 65). One step is
forward + loss + backward + grad clip + AdamW step + zero_grad, in fp32 and under bf16 autocast.

genloom's side is the body of genloom.train.Trainer.fit: lr from lr_at, the task's loss (the model's own
cross-entropy) under the Trainer's autocast, loss.item(), clip_grad_norm_, the optimizer from
model.configure_optimizer (nanoGPT grouping, fused AdamW), zero_grad(set_to_none=True), with TrainConfig's
defaults for lr, betas, weight decay and clipping. The transformers side is the common user setup:
GPT2LMHeadModel (SDPA attention, gelu_new), labels = input ids (HF shifts them itself), the same clipping,
and two optimizers, each on its own copy of the model: torch.optim.AdamW(fused=True), the fastest setting a
user can pick on CPU (the peer, "peer"), and torch.optim.AdamW with its defaults, which on CPU is the
per-tensor for-loop ("peer_default"). All start from the same weights and see the same batches; dropout is
equal on all sides (0.0 by default). Steps are interleaved (the order rotates every round) so machine noise
hits every side; tokens/s comes from the best step time, the median is reported too.

MFU for genloom: model FLOPs per token = 6*N + 12*n_layer*n_embd*block_size (the PaLM/nanoGPT estimate,
N = non-embedding parameters), achieved = that * tokens/s, divided by this machine's measured matmul rate
(2048x2048 @ 2048x2048) in the same dtype, sampled once per round of the same run (best kept, like the steps).

    python bench/train_step.py            # batch 16 x 256, 4 timed steps per side and dtype
    python bench/train_step.py --quick    # batch 4, 3 timed steps
    python bench/train_step.py --profile  # also the per-op split of genloom's and the peer's step

peer_mfu is the peer's achieved FLOP/s over the same matmul rate, and ceiling_ratio = matmul rate / the peer's
achieved FLOP/s: the ratio genloom would reach if its whole step ran at the measured matmul rate (1 / peer_mfu).
With --profile each side's step is also run under torch.profiler: self CPU time by op kind (matmul, attention,
optimizer, norm, activation, loss + softmax, embedding, copies, elementwise, other) and matmul_op_gflops, the
linears' 6 x N x tokens FLOPs over the matmul ops' own time (the attention's matmuls are under "attention").
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report  # noqa: E402
from genloom.config import TrainConfig  # noqa: E402
from genloom.hf import hf_config_from_gpt2, state_dict_to_hf  # noqa: E402
from genloom import families  # noqa: E402
from genloom.models.gpt import GPTConfig  # noqa: E402
from genloom.objectives import supervised_loss  # noqa: E402
from genloom.train import lr_at  # noqa: E402


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def autocast(bf16: bool):
    # the same context as Trainer._autocast
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


class GenloomStep:
    """One iteration of Trainer.fit's loop body (grad_accum = 1), with TrainConfig's defaults."""

    def __init__(self, model, tcfg: TrainConfig):
        self.model, self.t = model, tcfg
        self.optimizer = model.configure_optimizer(tcfg.weight_decay, tcfg.lr, (tcfg.beta1, tcfg.beta2))
        self.step = 0

    def __call__(self, batch, bf16: bool) -> float:
        t = self.t
        lr = lr_at(self.step, t)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(bf16):
            loss = supervised_loss(self.model, batch) / t.grad_accum
        loss.backward()
        loss_sum = loss.item()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss_sum


class HFStep:
    """The usual transformers loop: model(input_ids, labels=input_ids).loss, then torch AdamW
    (`fused=True`, or torch's defaults, which on CPU are the per-tensor for-loop)."""

    def __init__(self, model, grad_clip: float, fused: bool):
        self.model, self.grad_clip = model, grad_clip
        self.optimizer = torch.optim.AdamW(model.parameters(), fused=True) if fused else torch.optim.AdamW(model.parameters())

    def __call__(self, batch, bf16: bool) -> float:
        x, _ = batch
        with autocast(bf16):
            loss = self.model(input_ids=x, labels=x).loss
        loss.backward()
        value = loss.item()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value


def build(cfg: GPTConfig, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    ours = families.get("gpt").build(cfg)
    hf_dict = hf_config_from_gpt2(cfg)
    hf_dict.update(bos_token_id=None, eos_token_id=None)  # GPT-2's 50256 is outside a 65-token vocab
    theirs = GPT2LMHeadModel(GPT2Config(**hf_dict))
    missing, unexpected = theirs.load_state_dict(state_dict_to_hf(ours), strict=False)
    missing = [k for k in missing if not k.endswith(("attn.bias", "attn.masked_bias", "lm_head.weight"))]
    if missing or unexpected:
        raise RuntimeError(f"weight transfer to transformers failed: missing {missing}, unexpected {unexpected}")
    theirs_default = copy.deepcopy(theirs)  # a second copy for the default-AdamW row
    ours.train()
    theirs.train()
    theirs_default.train()
    # same weights, same function: the logits must agree before any timing is trusted
    x = torch.randint(0, cfg.vocab_size, (2, cfg.block_size), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        diff = (ours(x)[0] - theirs(input_ids=x).logits).abs().max().item()
    if diff > 1e-4:
        raise RuntimeError(f"genloom and transformers logits differ by {diff:.2e}; the configs do not match")
    return ours, theirs, theirs_default, diff


def measure(sides: dict, batches, bf16: bool, warmup: int, steps: int) -> dict:
    """Per-step wall times of every side, interleaved (order rotated each round); the matmul rate too; "first":
    each side's first (warm-up) step, which holds a compiled side's compile."""
    times = {name: [] for name in sides} | {"matmul": [], "first": {}}
    names = list(sides)
    dtype = torch.bfloat16 if bf16 else torch.float32
    for i in range(warmup + steps):
        times["matmul"].append(matmul_gflops(dtype, repeat=2))
        batch = batches[i % len(batches)]
        k = i % len(names)
        for name, fn in ((n, sides[n]) for n in names[k:] + names[:k]):
            t0 = time.perf_counter()
            loss = fn(batch, bf16)
            dt = time.perf_counter() - t0
            if not torch.isfinite(torch.tensor(loss)):
                raise RuntimeError(f"{name} loss became {loss}")
            if i >= warmup:
                times[name].append(dt)
            else:
                times["first"].setdefault(name, dt)
    return times


# torch.profiler op names -> the categories of the per-op split (first match wins; the rest is "other")
OP_KINDS = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_mkldnn", "mkldnn::")),
    ("attention", ("scaled_dot_product", "flash_attention")),
    ("optimizer", ("adam", "_foreach_")),
    ("norm", ("layer_norm",)),
    ("activation", ("gelu", "tanh")),
    ("loss + softmax", ("cross_entropy", "nll_loss", "log_softmax", "_softmax")),
    ("embedding", ("embedding",)),
    ("copies", ("aten::copy_", "aten::clone", "aten::contiguous", "aten::to", "aten::_to_copy", "aten::cat")),
    ("elementwise", ("aten::add", "aten::mul", "aten::div", "aten::sub", "aten::pow", "aten::where", "aten::fill_",
                     "aten::zero_", "aten::sum", "aten::norm", "aten::linalg_vector_norm", "aten::clamp",
                     "aten::masked_fill", "aten::stack", "aten::sqrt", "aten::rsqrt")),
)


def op_kind(name: str) -> str:
    low = name.lower()
    for kind, keys in OP_KINDS:
        if any(k.lower() in low for k in keys):
            return kind
    return "other"


def profile_split(fn, batches, bf16: bool, steps: int = 2) -> dict:
    """Self CPU time of one side's steps by op kind (torch.profiler), in ms per step, and the step's wall ms."""
    from torch.profiler import ProfilerActivity, profile

    fn(batches[0], bf16)  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for i in range(steps):
            fn(batches[i % len(batches)], bf16)
        wall = (time.perf_counter() - t0) / steps
    split: dict[str, float] = {}
    for ev in prof.key_averages():
        kind = op_kind(ev.key)
        split[kind] = split.get(kind, 0.0) + ev.self_cpu_time_total / 1e3 / steps
    total = sum(split.values())
    return {"step_ms": round(wall * 1e3, 1), "profiled_ms": round(total, 1),
            "ms": {k: round(v, 1) for k, v in sorted(split.items(), key=lambda kv: -kv[1])},
            "share": {k: round(v / total, 3) for k, v in sorted(split.items(), key=lambda kv: -kv[1])}}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 4 and 3 timed steps")
    ap.add_argument("--batch", type=int, default=0, help="batch size (default 16, 4 with --quick)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per side and dtype (default 4, 3 with --quick)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed steps per side and dtype (default 1)")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--compile", action="store_true", help="also time genloom with train.compile (torch.compile of "
                    "the model; its own copy and optimizer); compile_s = its first step minus its best")
    ap.add_argument("--profile", action="store_true", help="also profile genloom's and the peer's step (torch.profiler): "
                    "self CPU time per op kind, and the matmul ops' own FLOP/s against the measured matmul rate")
    args = ap.parse_args(argv)
    import transformers

    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch or (4 if args.quick else 16)
    steps = args.steps or (3 if args.quick else 4)
    warmup = args.warmup or 1

    cfg = GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=args.dropout)
    tcfg = TrainConfig(batch_size=batch)
    ours, theirs, theirs_default, diff = build(cfg, tcfg.seed)
    T = cfg.block_size
    gen = torch.Generator().manual_seed(tcfg.seed)
    batches = []
    for _ in range(4):  # random windows of T + 1 tokens, as LMTask.batch draws them
        w = torch.randint(0, cfg.vocab_size, (batch, T + 1), generator=gen)
        batches.append((w[:, :-1].contiguous(), w[:, 1:].contiguous()))
    ours_step = GenloomStep(ours, tcfg)
    sides = {"genloom": ours_step, "peer": HFStep(theirs, tcfg.grad_clip, fused=True),
             "peer_default": HFStep(theirs_default, tcfg.grad_clip, fused=False)}
    if args.compile:  # what train.compile does: the loss through torch.compile(model), same parameters
        twin = copy.deepcopy(ours)
        compiled_step = GenloomStep(twin, tcfg)
        compiled_step.model = torch.compile(twin)
        sides["genloom_compiled"] = compiled_step
    opt = ours_step.optimizer
    genloom_opt = (f"torch.optim.AdamW(fused={bool(opt.defaults.get('fused'))}), decay on matrices only "
                   f"(nanoGPT grouping), lr {tcfg.lr}, betas ({tcfg.beta1}, {tcfg.beta2}), weight decay {tcfg.weight_decay}")

    n_params = ours.num_params()  # non-embedding (nanoGPT's count)
    flops_per_token = 6 * n_params + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
    rows = []
    for name in args.dtypes.split(","):
        bf16 = {"fp32": False, "bf16": True}[name]
        times = measure(sides, batches, bf16, warmup, steps)
        mm = max(times["matmul"])  # best observed, like the step times
        tok = batch * T
        ours_tps, theirs_tps = tok / min(times["genloom"]), tok / min(times["peer"])
        default_tps = tok / min(times["peer_default"])
        achieved = flops_per_token * ours_tps / 1e9
        peer_achieved = flops_per_token * theirs_tps / 1e9
        rows.append(
            {
                "case": f"train-char10M-{name}",
                "unit": "tokens/s",
                "genloom": round(ours_tps, 1),
                "peer": round(theirs_tps, 1),
                "ratio": round(ours_tps / theirs_tps, 3),
                "genloom_median": round(tok / statistics.median(times["genloom"]), 1),
                "peer_median": round(tok / statistics.median(times["peer"]), 1),
                "ratio_median": round(statistics.median(times["peer"]) / statistics.median(times["genloom"]), 3),
                "peer_default": round(default_tps, 1),
                "peer_default_median": round(tok / statistics.median(times["peer_default"]), 1),
                "ratio_vs_peer_default": round(ours_tps / default_tps, 3),
                "ratio_vs_peer_default_median": round(
                    statistics.median(times["peer_default"]) / statistics.median(times["genloom"]), 3),
                "achieved_gflops": round(achieved, 1),
                "matmul_gflops": round(mm, 1),
                "mfu": round(achieved / mm, 3),
                "peer_achieved_gflops": round(peer_achieved, 1),
                "peer_mfu": round(peer_achieved / mm, 3),
                # genloom at the full measured matmul rate against the peer as measured: no step can beat this
                "ceiling_ratio": round(mm / peer_achieved, 3),
                "flops_per_token": flops_per_token,
                "params": n_params,
                "batch": batch,
                "seq": T,
                "dropout": args.dropout,
                "steps": steps,
                "stat": "best step (median also given), steps interleaved, order rotated each round",
                "genloom_optimizer": genloom_opt,
                "peer_name": f"transformers {transformers.__version__} GPT2LMHeadModel "
                f"({theirs.config._attn_implementation} attention) + torch.optim.AdamW(fused=True)",
                "peer_default_name": "the same with torch.optim.AdamW defaults (per-tensor for-loop on CPU)",
                "start_logit_diff": float(f"{diff:.2e}"),
            }
        )
        if "genloom_compiled" in times:
            c = times["genloom_compiled"]
            c_tps = tok / min(c)
            rows[-1].update(genloom_compiled=round(c_tps, 1), genloom_compiled_median=round(tok / statistics.median(c), 1),
                            ratio_compiled=round(c_tps / theirs_tps, 3),
                            ratio_compiled_median=round(statistics.median(times["peer"]) / statistics.median(c), 3),
                            mfu_compiled=round(flops_per_token * c_tps / 1e9 / mm, 3),
                            compile_s=round(times["first"]["genloom_compiled"] - min(c), 1))
        if args.profile:
            matmul_flops = 6 * n_params * tok  # the linears' forward and backward FLOPs of one step
            for side in ("genloom", "peer"):
                split = profile_split(sides[side], batches, bf16)
                mm_ms = split["ms"].get("matmul", 0.0)
                split["matmul_op_gflops"] = round(matmul_flops / (mm_ms / 1e3) / 1e9, 1) if mm_ms else None
                rows[-1][f"{side}_profile"] = split
    report("train_step", rows)
    return rows


if __name__ == "__main__":
    main()
