"""Shared bench helpers: machine facts, timing, and one JSON object per case (printed and saved)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }


def timeit(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time of `repeat` calls after `warmup` calls (seconds)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def report(bench: str, rows: list[dict]) -> None:
    """Print each case as one JSON line and save them all to bench/results/<bench>.jsonl."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    facts = machine()
    lines = []
    for row in rows:
        row = {**row, **{k: v for k, v in facts.items() if k not in row}}
        if row.get("peer"):
            row.setdefault("ratio", round(row["genloom"] / row["peer"], 3))
        lines.append(json.dumps(row))
        print(lines[-1], flush=True)
    (RESULTS / f"{bench}.jsonl").write_text("\n".join(lines) + "\n")
