"""Training throughput of 2 processes x 1 thread (torchrun, gloo) vs 1 process x 2 threads, the same global batch.

A third side, 1 process x 1 thread, shows what one core does alone (the speedup of 2 processes over it would
be 2.0 on two idle cores). Both sides run `genloom train` on the same config and data: a char-level GPT (4 layers, 128 wide, block 128)
on a synthetic English corpus, global batch 16 (one process of 16 rows with train.threads = 2 against two
ranks of 8 rows, one thread each). On the same 2 cores the ideal ratio is 1.0: the figure is the scaling
efficiency, what data parallelism costs against threads inside one process. Each side runs `--rounds` times,
the order of the sides rotating from round to round; tokens/s is measured from metrics.jsonl between the step after
`--skip` warm-up steps and the last step (elapsed_s of the loop, without start-up). The communication
share is rank 0's time in collectives (the gradient all-reduce and the step's figures, waits for the other
rank included) over its loop time, from the run's summary.

    python bench/scale.py                   # 3 rounds of 40 steps per side
    python bench/scale.py --rounds 1 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import report
from genloom.data.text import prepare

MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "dropout": 0.0}
GLOBAL_BATCH = 16


def corpus(path: Path) -> None:
    rng = random.Random(0)
    words = "the a cat dog old man friend bird child sees likes finds follows hears wants red ball green apple " \
            "river bread small house bright star".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + "." for _ in range(20_000)]
    path.write_text("\n\n".join("\n".join(lines[i: i + 8]) for i in range(0, len(lines), 8)), encoding="utf-8")


def run(data: Path, out: Path, procs: int, threads: int, steps: int) -> dict:
    sets = [f"data.dir='{data}'", f"train.out_dir='{out}'", f"train.max_steps={steps}", "train.warmup_steps=2",
            "train.eval_interval=100000", "train.ckpt_interval=100000", "train.log_interval=1",
            f"train.batch_size={GLOBAL_BATCH // procs}", f"train.threads={threads}",
            *(f"model.{k}={json.dumps(v)}" for k, v in MODEL.items())]
    args = ["-m", "genloom", "train", *(a for s in sets for a in ("--set", s))]
    cmd = [sys.executable, *args] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    summary = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    return {"summary": summary, "rows": [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()
                                         if '"loss"' in ln]}


def rate(result: dict, skip: int) -> float:
    rows = result["rows"]
    a, b = rows[skip - 1], rows[-1]
    return (b["step"] - a["step"]) * GLOBAL_BATCH * MODEL["block_size"] / (b["elapsed_s"] - a["elapsed_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--skip", type=int, default=5, help="warm-up steps left out of tokens/s")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus(tmp / "corpus.txt")
        prepare(str(tmp / "corpus.txt"), tmp / "data", "char")
        sides = [(2, 1), (1, 2), (1, 1)]  # (processes, threads each)
        rates = {side: [] for side in sides}
        shares, losses = [], {side: [] for side in sides}
        for r in range(a.rounds):
            k = r % len(sides)
            for procs, threads in sides[k:] + sides[:k]:  # the order rotates from round to round
                res = run(tmp / "data", tmp / f"run-{r}-{procs}x{threads}", procs, threads, a.steps)
                rates[(procs, threads)].append(rate(res, a.skip))
                losses[(procs, threads)].append(res["summary"]["train_loss"])
                if procs == 2:
                    shares.append(res["summary"]["comm_s"] / max(1e-9, res["rows"][-1]["elapsed_s"]))
    two, one, single = rates[(2, 1)], rates[(1, 2)], rates[(1, 1)]
    report("scale", [{
        "case": "train-2proc-x1thread-vs-1proc-x2threads",
        "unit": "tokens/s (global batch 16 x 128, char GPT 4x128)",
        "genloom": round(max(two), 1), "peer": round(max(one), 1), "ratio": round(max(two) / max(one), 3),
        "genloom_median": round(statistics.median(two), 1), "peer_median": round(statistics.median(one), 1),
        "ratio_median": round(statistics.median(two) / statistics.median(one), 3),
        "scaling_efficiency": round(max(two) / max(one), 3),
        "comm_share_of_step": round(statistics.median(shares), 3), "comm_share_min": round(min(shares), 3),
        "one_process_one_thread": round(max(single), 1),
        "speedup_vs_one_thread": round(max(two) / max(single), 3),  # 2.0 would be perfect on 2 idle cores
        "same_final_loss": all(abs(x - y) < 1e-4 * abs(y) for x, y in zip(losses[(2, 1)], losses[(1, 2)])),
        "steps": a.steps, "measured_steps": a.steps - a.skip, "repeats": a.rounds,
        "stat": "best and median of alternating runs; comm share: median over the 2-process runs",
        "peer_is": "1 process, train.threads=2, batch 16",
    }])


if __name__ == "__main__":
    main()
