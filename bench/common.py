"""Shared bench helpers: machine facts, interleaved timing, and one JSON object per case (printed and saved)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what decides fp32 vs bf16 matmul speed on CPU


def machine() -> dict:
    """CPU model and the flags that matter (avx512_bf16 / AMX: native bf16 matmuls), threads, versions, load."""
    cpu, flags = "", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cpu_flags": {f: f in flags for f in FLAGS},
        "cores": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other processes on the machine when the row was written
        "python": platform.python_version(),
    }


def interleaved(fns: dict, repeat: int = 3, warmup: int = 1, clock=time.perf_counter) -> dict[str, list[float]]:
    """Wall times (s) of each named fn over `repeat` rounds; each round runs every fn once, and the order
    rotates from round to round (a, b, c / b, c, a / ...), so load changes hit every side alike. clock:
    time.process_time gives CPU seconds instead (one thread per side: time spent descheduled does not count)."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(repeat):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = clock()
            fns[name]()
            times[name].append(clock() - t0)
    return times


def rates(work: float, times: list[float], digits: int = 1) -> dict:
    """Best and median rate (work / seconds) over repeated timings, and how many there were."""
    return {"best": round(work / min(times), digits), "median": round(work / statistics.median(times), digits),
            "repeats": len(times)}


def pair(case: str, unit: str, work: float, ours: list[float], peer: list[float], digits: int = 1, **extra) -> dict:
    """One case row from interleaved timings: genloom/peer = best rate, *_median = median rate, both ratios."""
    a, b = rates(work, ours, digits), rates(work, peer, digits)
    return {"case": case, "unit": unit, "genloom": a["best"], "peer": b["best"],
            "ratio": round(min(peer) / min(ours), 3), "genloom_median": a["median"], "peer_median": b["median"],
            "ratio_median": round(statistics.median(peer) / statistics.median(ours), 3), "repeats": len(ours),
            "stat": "best and median of interleaved repeats", **extra}


def report(bench: str, rows: list[dict], keep_others: bool = False) -> None:
    """Print each case as one JSON line and save them to bench/results/<bench>.jsonl. With keep_others (a run
    of some cases only), rows of other cases already in the file stay, each with its own machine facts."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    facts = machine()
    path = RESULTS / f"{bench}.jsonl"
    new = []
    for row in rows:
        row = {**row, **{k: v for k, v in facts.items() if k not in row}}
        if row.get("peer"):
            row.setdefault("ratio", round(row["genloom"] / row["peer"], 3))
        new.append(row)
        print(json.dumps(row), flush=True)
    if keep_others and path.exists():
        by_case, merged, placed = {r["case"]: r for r in new}, [], set()
        for r in (json.loads(x) for x in path.read_text().splitlines() if x.strip()):
            if r["case"] not in by_case:
                merged.append(r)
            elif r["case"] not in placed:  # a case re-run takes its old place in the file
                merged.append(by_case[r["case"]])
                placed.add(r["case"])
        new = merged + [r for case, r in by_case.items() if case not in placed]
    path.write_text("".join(json.dumps(r) + "\n" for r in new))
