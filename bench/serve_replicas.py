"""Serving past one process: aggregate tokens/s of 2 `genloom serve` replicas against 1, each pinned to one core.

Two real `genloom serve --no-jobs` processes (the bundled models/chat, --threads 1, OMP_NUM_THREADS=1, log level
warning) share one data directory and one database (SQLite in it by default, --db for PostgreSQL), as README's
deployment recipe runs them; `taskset -c 0` pins replica A to core 0, `taskset -c 1` replica B to core 1. The
clients are 16 asyncio tasks in this process (not pinned: on a 2-core machine they share the cores with the
servers), each streaming POST /v1/chat/completions back to back (temperature 0, and min_tokens = max_tokens =
64 by default, so every reply has the same length and decoding dominates; --natural lets replies stop early).

  1 replica:  all 16 clients on replica A (replica B idle).
  2 replicas: clients 0, 2, 4, ... on A and 1, 3, 5, ... on B (what a round-robin load balancer does).

The rounds are cut into blocks of --block rounds; the blocks alternate between the two set-ups (1 2, 2 1, ...)
so a change of load on the machine hits both. genloom = 2 replicas, peer = 1 replica; the figure is all
completion tokens of a block over its wall time: best block, median block, and all tokens over all block time.
Every request's history row is written to the shared database, as in production (history_rows_written against
requests_sent, warm-ups included, checks that none was lost). Beside the wall-clock rates,
the servers' CPU seconds during each set-up's blocks (/proc/PID/stat) give tokens per server CPU-second: what a
replica costs per token regardless of how much of its core other processes took (on a machine shared with other
jobs the wall-clock ratio says more about the load than about genloom; 2 replicas can reach at most 2x).

    python bench/serve_replicas.py                     # 16 clients x 16 rounds, blocks of 2 -> results/serve_replicas.jsonl
    python bench/serve_replicas.py --db postgresql+psycopg://USER:PW@HOST/DB
    python bench/serve_replicas.py --quick             # 16 clients x 2 rounds, 16 tokens
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report  # noqa: E402
from genloom.serve.database import Database  # noqa: E402
from bench.serve import MODEL, ChildServer, chat, cpu_seconds, free_port, new_client, ok, pct, prompt  # noqa: E402


class Replica(ChildServer):
    """`genloom serve --no-jobs` pinned to one core by taskset, on a free loopback port."""

    def __init__(self, core: int, data_dir: Path, db: str | None, max_batch: int, log_dir: Path):
        port, self.core = free_port(), core
        cmd = ["taskset", "-c", str(core), sys.executable, "-m", "genloom.cli", "serve", "--model", str(MODEL),
               "--data-dir", str(data_dir), "--no-jobs", "--port", str(port), "--threads", "1",
               "--max-batch", str(max_batch), "--max-queue", "64", *(["--db", db] if db else [])]
        super().__init__(cmd, port=port, threads=1, log=log_dir / f"replica-{core}.log")

    def affinity(self) -> list[int]:
        return sorted(os.sched_getaffinity(self.pid))


async def block(client, urls: list[str], clients: int, rounds: range, max_tokens: int, min_tokens: int):
    """Client i sends its requests back to back to urls[i % len(urls)]; results and wall time."""
    async def one(i):
        return [await chat(client, urls[i % len(urls)], prompt(i, r), max_tokens, min_tokens) for r in rounds]

    t0 = time.perf_counter()
    results = [r for rs in await asyncio.gather(*(one(i) for i in range(clients))) for r in rs]
    return results, time.perf_counter() - t0


async def run(replicas: list[Replica], clients: int, rounds: int, size: int, max_tokens: int, min_tokens: int) -> dict:
    setups = {"two": [r.url for r in replicas], "one": [replicas[0].url]}
    sides = {name: {"results": [], "walls": [], "tokens": [], "cpu": 0.0} for name in setups}
    async with new_client() as client:
        for r in replicas:  # a warm-up request each
            warm = await chat(client, r.url, "Hello!", max_tokens, min_tokens)
            if not ok(warm):
                raise SystemExit(f"warm-up request failed: {warm}")
        cpu0 = {r.core: cpu_seconds(r.pid) for r in replicas}
        c0 = time.process_time()
        names = list(setups)
        for k, start in enumerate(range(0, rounds, size)):
            for name in names if k % 2 == 0 else names[::-1]:
                before = sum(cpu_seconds(r.pid) for r in replicas)
                res, wall = await block(client, setups[name], clients, range(start, min(rounds, start + size)),
                                        max_tokens, min_tokens)
                sides[name]["cpu"] += sum(cpu_seconds(r.pid) for r in replicas) - before
                sides[name]["results"] += res
                sides[name]["walls"].append(wall)
                sides[name]["tokens"].append(sum(x["tokens"] for x in res if ok(x)))
        client_cpu = time.process_time() - c0
        server_cpu = {f"core{core}": round(cpu_seconds(r.pid) - cpu0[core], 2) for core, r in
                      ((r.core, r) for r in replicas)}
    out = {}
    for name, side in sides.items():
        good = [x for x in side["results"] if ok(x)]
        rates = [t / w for t, w in zip(side["tokens"], side["walls"])]
        ttfts = [x["ttft"] for x in good if x["ttft"] is not None]
        out[name] = {"best": round(max(rates), 1), "median": round(statistics.median(rates), 1),
                     "aggregate": round(sum(side["tokens"]) / sum(side["walls"]), 1), "blocks": len(rates),
                     "requests": len(side["results"]), "failed": len(side["results"]) - len(good),
                     "completion_tokens": sum(side["tokens"]), "wall_s": round(sum(side["walls"]), 2),
                     "server_cpu_s": round(side["cpu"], 2),
                     "tokens_per_server_cpu_s": round(sum(side["tokens"]) / side["cpu"], 1),
                     "ttft_p50_s": pct(ttfts, 0.5), "ttft_p99_s": pct(ttfts, 0.99)}
    out["client_cpu_s"], out["server_cpu_s"] = round(client_cpu, 2), server_cpu
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds, 16 tokens")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=None, help="requests per client per set-up (default 16; quick 2)")
    ap.add_argument("--block", type=int, default=None, help="rounds per block (default 2; quick 1)")
    ap.add_argument("--max-tokens", type=int, default=None, help="default 64; quick 16")
    ap.add_argument("--natural", action="store_true", help="let replies stop early (no min_tokens)")
    ap.add_argument("--db", default=None, help="the replicas' database URL (default: SQLite in their data dir)")
    args = ap.parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 cores to pin the two replicas to")
    rounds = args.rounds or (2 if args.quick else 16)
    size = args.block or (1 if args.quick else 2)
    max_tokens = args.max_tokens or (16 if args.quick else 64)
    min_tokens = 0 if args.natural else max_tokens
    t_start, load_before = time.perf_counter(), round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="genloom-bench-replicas-") as tmp:
        data, logs = Path(tmp) / "data", Path(tmp) / "logs"
        logs.mkdir()
        first = Replica(0, data, args.db, args.clients, logs)  # the first migrates; the second finds it done
        first.wait_ready(180)
        replicas = [first, Replica(1, data, args.db, args.clients, logs)]
        db = Database(args.db, data_dir=data, upgrade=False)
        rows_before = len(db.history(10**7))
        try:
            replicas[1].wait_ready(180)
            pinned = [r.affinity() for r in replicas]
            print(f"# {args.clients} clients x {rounds} rounds of {max_tokens} tokens, blocks of {size}, alternating "
                  f"1 replica (core 0) and 2 replicas (cores 0 and 1)", flush=True)
            res = asyncio.run(run(replicas, args.clients, rounds, size, max_tokens, min_tokens))
        finally:
            codes = [r.close() for r in replicas]
        history_rows = len(db.history(10**7)) - rows_before  # one per request, warm-ups included
        db.close()
    two, one = res["two"], res["one"]
    row = {
        "case": f"serve-replicas-2v1-{args.clients}-clients" + ("-natural" if args.natural else f"-{max_tokens}-tokens")
                + ("-postgresql" if args.db else ""),
        "unit": "tokens/s (all replicas together)",
        "genloom": two["best"], "peer": one["best"],
        "peer_name": "1 replica (core 0) taking all the clients",
        "ratio": round(two["best"] / one["best"], 3),
        "genloom_median": two["median"], "peer_median": one["median"],
        "ratio_median": round(two["median"] / one["median"], 3),
        "genloom_aggregate": two["aggregate"], "peer_aggregate": one["aggregate"],
        "ratio_aggregate": round(two["aggregate"] / one["aggregate"], 3),
        "tokens_per_server_cpu_s": two["tokens_per_server_cpu_s"],
        "peer_tokens_per_server_cpu_s": one["tokens_per_server_cpu_s"],
        "cpu_efficiency_ratio": round(two["tokens_per_server_cpu_s"] / one["tokens_per_server_cpu_s"], 3),
        "stat": f"best and median over {two['blocks']} blocks per set-up of {size} rounds x {args.clients} clients, "
                "alternating (1 2, 2 1, ...)",
        "two": two, "one": one, "client_cpu_s": res["client_cpu_s"], "server_cpu_s": res["server_cpu_s"],
        "replica_affinity": pinned, "server_threads": 1, "max_batch": args.clients,
        "max_tokens": max_tokens, "min_tokens": min_tokens or None, "temperature": 0, "stream": True,
        "database": "postgresql" if args.db else "sqlite (shared data dir)", "replica_exit_codes": codes,
        "history_rows_written": history_rows, "requests_sent": two["requests"] + one["requests"] + len(replicas),
        "loadavg_1m_before": load_before, "quick": args.quick,
        "bench_seconds": round(time.perf_counter() - t_start, 1),
    }
    report("serve_replicas-quick" if args.quick else "serve_replicas", [row], keep_others=True)


if __name__ == "__main__":
    main()
