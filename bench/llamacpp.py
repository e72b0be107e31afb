"""Decoding speed: genloom against llama.cpp (llama-cpp-python's C API) on the same f32 weights, as GGUF.

Every bundled text starter (models/kjv, models/tang, models/chat) is written with `genloom export-gguf`
(f32) and run by llama.cpp; greedy, a 32-token prompt, 128 new tokens (fewer where the model's context is
shorter: prompt + new <= block_size, as neither side may run past the trained positions), 2 threads.
Batch 1, and batch 8 through llama.cpp's batch API: one llama_batch holding 8 sequences (seq_id 0..7,
one token each per step) in one context of n_seq_max 8; the KV cache is f32 on both sides. The llama.cpp side is a plain ctypes loop over
llama_decode and an argmax of llama_get_logits (no sampler chain); genloom runs stream_ids (what
`genloom generate` drives). Before timing, each case checks that greedy ids agree (batch 1: must be equal).
Calls interleave (bench.common.interleaved); genloom/peer = best, *_median = median. Metric: new tokens * batch / s.
With `--compile`, genloom's side is its compiled decode step (`generate --compile`: AOTInductor, see
genloom.models.runtime) and the eager step runs as a third side in the same rounds (genloom_eager, eager_ratio);
compile_s is the first (checking) run minus a timed one: the compile, or loading it from the on-disk cache.

    python bench/llamacpp.py            # -> bench/results/llamacpp.jsonl
    python bench/llamacpp.py --compile  # the compiled step against llama.cpp, the eager step beside it
    python bench/llamacpp.py --quick    # 32 new tokens, 2 rounds
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import llama_cpp as lc
import numpy as np
import torch

from bench.common import interleaved, pair, report
from genloom.checkpoints import load_model
from genloom.gguf_export import export_gguf
from genloom.models import runtime
from genloom.sample import SamplingParams, stream_ids

ROOT = Path(__file__).resolve().parent.parent
STARTERS = {  # starter -> text its prompts are cut from (32 tokens each, 8 different ones for batch 8)
    "kjv": "And God said, Let there be light: and there was light. And God saw the light, that it was good: "
    "and God divided the light from the darkness. And God called the light Day, and the darkness he called "
    "Night. And the evening and the morning were the first day. And God said, Let there be a firmament in the "
    "midst of the waters, and let it divide the waters from the waters. " * 4,
    "tang": "床前明月光，疑是地上霜。举头望明月，低头思故乡。白日依山尽，黄河入海流。欲穷千里目，更上一层楼。" * 4,
    "chat": "User: hello\nBot: Hi, how are you?\nUser: I am fine, thank you. What do you like to do?\n"
    "Bot: I like to talk about books and music.\nUser: Tell me a joke.\nBot: " * 8,
}
PROMPT_LEN = 32


@lc.llama_log_callback
def _quiet(level, text, user_data):  # llama.cpp's load log, dropped (llama-cpp-python's own callback chokes on
    pass  # a log line cut inside a UTF-8 character, the Tang vocabulary's)


class LlamaCpp:
    """One llama.cpp model and context of n_seq_max = batch, driven through llama_batch / llama_decode."""

    def __init__(self, path: Path, batch: int, n_ctx: int, threads: int = 2):
        lc.llama_backend_init()
        lc.llama_log_set(_quiet, ctypes.c_void_p(0))
        mp = lc.llama_model_default_params()
        self.model = lc.llama_model_load_from_file(str(path).encode(), mp)
        cp = lc.llama_context_default_params()
        cp.n_ctx = n_ctx * batch
        cp.n_batch = cp.n_ubatch = max(PROMPT_LEN * batch, 512)
        cp.n_seq_max = batch
        cp.n_threads = cp.n_threads_batch = threads
        cp.type_k = cp.type_v = lc.GGML_TYPE_F32  # an f32 KV cache, as genloom's (llama.cpp's default is f16)
        self.ctx = lc.llama_init_from_model(self.model, cp)
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.batch = lc.llama_batch_init(PROMPT_LEN * batch, 0, batch)
        self.B = batch

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        b.n_tokens = len(entries)
        for i, (tok, pos, seq, want) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, want
            b.seq_id[i][0] = seq
        if lc.llama_decode(self.ctx, b) != 0:
            raise SystemExit("llama_decode failed")

    def _argmax(self) -> list[int]:
        ptr = lc.llama_get_logits(self.ctx)
        logits = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.B, self.n_vocab))
        return logits.argmax(-1).tolist()

    def greedy(self, prompts: list[list[int]], new: int) -> np.ndarray:
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        T = len(prompts[0])
        self._decode([(t, p, s, p == T - 1) for s, ids in enumerate(prompts) for p, t in enumerate(ids)])
        out = [self._argmax()]
        for step in range(1, new):
            self._decode([(tok, T + step - 1, s, True) for s, tok in enumerate(out[-1])])
            out.append(self._argmax())
        return np.array(out).T  # (B, new)


def run_genloom(model, prompts: list[list[int]], new: int) -> np.ndarray:
    sp = SamplingParams(max_new_tokens=new, temperature=0.0, stop_at_eot=False)
    return torch.stack([tok for _, tok in stream_ids(model, prompts, sp, eot_id=None)], dim=1).numpy()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 new tokens, 2 rounds")
    ap.add_argument("--models", default=",".join(STARTERS))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="genloom's compiled decode step (eager beside it)")
    ap.add_argument("--threads", type=int, default=2, help="threads on both sides")
    ap.add_argument("--cpu-time", action="store_true", help="time in CPU seconds (process_time), not wall: for a "
                    "busy machine, with --threads 1 (spin-waiting threads would count)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    repeat = 2 if args.quick else args.repeat
    clock = time.process_time if args.cpu_time else time.perf_counter
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="genloom-bench-gguf-"))
    for name in args.models.split(","):
        folder = ROOT / "models" / name
        lm = load_model(folder)
        path, _, _ = export_gguf(folder, tmp / f"{name}.gguf", "f32")
        ids = lm.tokenizer.encode(STARTERS[name])
        block = lm.config.block_size
        new = min(32 if args.quick else 128, block - PROMPT_LEN)
        for B in [int(b) for b in args.batches.split(",")]:
            prompts = [ids[i * 7 : i * 7 + PROMPT_LEN] for i in range(B)]
            assert all(len(p) == PROMPT_LEN for p in prompts), "prompt text too short"
            peer = LlamaCpp(path, B, PROMPT_LEN + new, args.threads)
            ours = runtime.compile_decode(copy.deepcopy(lm.model)) if args.compile else lm.model
            t0 = time.perf_counter()
            a = run_genloom(ours, prompts, new)  # the check is the warm-up (and the compile)
            first = time.perf_counter() - t0
            b = peer.greedy(prompts, new)
            same = float((a == b).mean())
            if B == 1 and same < 1:
                raise SystemExit(f"{name} b1: greedy ids differ between genloom and llama.cpp")
            sides = {"genloom": lambda: run_genloom(ours, prompts, new), "peer": lambda: peer.greedy(prompts, new)}
            if args.compile:
                if not (run_genloom(lm.model, prompts, new) == a).all():
                    raise SystemExit(f"{name} b{B}: the compiled step's greedy ids differ from the eager step's")
                sides["eager"] = lambda: run_genloom(lm.model, prompts, new)
            t = interleaved(sides, repeat, warmup=0, clock=clock)
            extra = {}
            if args.compile:
                e = pair("", "", new * B, t["eager"], t["peer"])
                extra = {"genloom_eager": e["genloom"], "genloom_eager_median": e["genloom_median"],
                         "eager_ratio": e["ratio"], "eager_ratio_median": e["ratio_median"],
                         "compile_s": round(first - min(t["genloom"]), 1), "compile_failed": ours.decode_step.failed}
            rows.append({
                **pair(f"gguf-{name}-b{B}" + "-compiled" * args.compile + f"-t{args.threads}" * (args.threads != 2)
                       + "-cputime" * args.cpu_time, "tokens/s", new * B,
                       t["genloom"], t["peer"], **extra),
                "compiled": args.compile,
                "threads": args.threads,
                "clock": "process_time (CPU s)" if args.cpu_time else "wall",
                "peer_name": f"llama.cpp via llama-cpp-python {lc.__version__}, f32 GGUF from genloom export-gguf",
                "peer_settings": "llama_decode + argmax of llama_get_logits, f32 KV cache; " + (
                    "one llama_batch of 8 sequences (seq_id 0..7) per step" if B > 1 else "one token per step"),
                "params": lm.model.num_params(non_embedding=False),
                "arch": lm.config.arch,
                "tokenizer": lm.tokenizer.kind,
                "batch": B,
                "prompt_tokens": PROMPT_LEN,
                "new_tokens": new,
                "dtype": "float32",
                "greedy_ids_equal_fraction": round(same, 4),
                "quick": args.quick,
            })
            r = rows[-1]
            print(f"# {r['case']}: genloom {r['genloom']} vs llama.cpp {r['peer']} tokens/s "
                  f"({r['genloom'] / r['peer']:.2f}x)" + (f"; eager {r['genloom_eager']} ({r['eager_ratio']:.2f}x)"
                                                         if args.compile else ""), flush=True)
            lc.llama_batch_free(peer.batch)
            lc.llama_free(peer.ctx)
            lc.llama_model_free(peer.model)
    report("llamacpp-quick" if args.quick else "llamacpp", rows, keep_others=True)


if __name__ == "__main__":
    main()
