"""Serving: concurrent streaming chat clients on loopback against `genloom serve` (the bundled models/chat).

The server runs in its own process (genloom.serve.app.serve, 2 torch threads, no storage, no jobs worker,
log level warning), so clients and server do not share a GIL; the clients wait for /health first. Clients
are asyncio tasks on one httpx2 (httpx) AsyncClient, each streaming POST /v1/chat/completions with
temperature 0, max_tokens 64, stream_options.include_usage, and its own prompt. Tokens are the server's
usage.completion_tokens; time to first token (TTFT) is from sending the request to the first SSE chunk with
non-empty delta.content. One warmup request precedes each timed run. The bundled chat model's greedy
replies mostly end (stop) after about ten tokens, well before max_tokens, so these runs weigh prefill and
per-request HTTP work as much as decoding; tokens_per_request in the output says how long replies were.

Cases:
  serve-16-clients-stream    16 clients x 16 requests back to back; aggregate tokens/s (all completion
                             tokens / wall time of the run) with continuous batching (max_batch=16) against
                             the same server forced to one request at a time (max_batch=1); max_queue 64.
  serve-16-clients-stream-64-tokens
                             the same with a fixed output length: every request also sends the extra field
                             min_tokens = max_tokens = 64 (vLLM's extension; its benchmark_serving fixes
                             output lengths the same way with ignore_eos), so each reply is 64 tokens and
                             decoding, not per-request work, dominates.
  serve-64-clients-overload  5 waves of 64 simultaneous clients against max_batch=16, max_queue=16:
                             200s vs 429s (each 429 must carry Retry-After, nobody retries), failures,
                             the server's VmHWM/VmRSS before and after, /health afterwards.
                             genloom = successful requests/s over the waves; no peer.

    python bench/serve.py            # full run -> bench/results/serve.jsonl
    python bench/serve.py --quick    # 8 clients, 16 tokens, 1 round / 1 wave -> bench/results/serve-quick.jsonl

Each streaming case runs on fresh servers (one with max_batch=16, one with max_batch=1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:  # openai >= 3 ships its HTTP client as httpx2
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from bench.common import report

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "chat"
SERVER_THREADS = 2
QUESTIONS = [
    "What is your name?", "Do you like music?", "What is the weather like?", "Tell me a joke.",
    "What do you do for fun?", "Are you a robot?", "What is your favorite food?", "How old are you?",
    "Do you have any pets?", "What is love?", "Can you help me?", "Where do you live?",
    "What is the meaning of life?", "Do you like sports?", "What books do you read?", "How are you today?",
]
NAMES = ["Ann", "Bob", "Cleo", "Dev", "Eve", "Finn", "Gia", "Hal"]


def prompt(client: int, rnd: int) -> str:
    """A different short chat prompt per client and round (the model's context is 128 tokens)."""
    q = QUESTIONS[(client + 5 * rnd) % len(QUESTIONS)]
    return f"Hi, I am {NAMES[(client // len(QUESTIONS) + rnd) % len(NAMES)]}. {q}"


def pct(xs: list[float], q: float) -> float | None:
    """The q-quantile with linear interpolation (numpy's default)."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 4)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mem(pid: int) -> dict:
    """Peak and current resident memory of a process in MiB (/proc/PID/status VmHWM, VmRSS)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = round(int(val.split()[0]) / 1024, 1)
    return out


class ServerProcess:
    """`genloom.serve.app.serve` in a child process on a free loopback port; ready once /health says ok."""

    def __init__(self, *, max_batch: int, max_queue: int, log_dir: Path):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = dict(max_batch=max_batch, max_queue=max_queue, jobs=False, threads=SERVER_THREADS)
        code = (
            "import torch; torch.set_num_threads(%d)\n"
            "from genloom.serve.app import serve\n"
            "serve([%r], port=%d, log_level='warning', max_batch=%d, max_queue=%d, jobs=False)\n"
            % (SERVER_THREADS, str(MODEL), self.port, max_batch, max_queue)
        )
        self.log = log_dir / f"server-b{max_batch}-q{max_queue}.log"
        env = {**os.environ, "OMP_NUM_THREADS": str(SERVER_THREADS), "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 120.0) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                r = httpx.get(f"{self.url}/health", timeout=2)
                if r.status_code == 200 and r.json().get("status") == "ok":
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.close()
        raise SystemExit(f"the server did not answer /health within {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def close(self) -> int | None:
        """SIGTERM (uvicorn shuts down cleanly), then SIGKILL after 30 s. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


async def chat(client: httpx.AsyncClient, url: str, text: str, max_tokens: int, min_tokens: int = 0) -> dict:
    """One streaming chat request: status, TTFT, content chunks, completion tokens, text, Retry-After.
    min_tokens > 0 sends vLLM's extra field (what openai clients pass with extra_body)."""
    body = {"model": "chat", "messages": [{"role": "user", "content": text}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    if min_tokens:
        body["min_tokens"] = min_tokens
    out = {"status": None, "ttft": None, "chunks": 0, "tokens": None, "text": "", "error": None,
           "retry_after": None, "finish_reason": None}
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
            out["status"] = resp.status_code
            if resp.status_code != 200:
                out["retry_after"] = resp.headers.get("retry-after")
                await resp.aread()
                out["error"] = resp.text[:200]
                return out
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                ev = json.loads(data)
                if "error" in ev:
                    out["error"] = ev["error"].get("message", "error event")
                    continue
                if ev.get("usage"):
                    out["tokens"] = ev["usage"]["completion_tokens"]
                for ch in ev.get("choices") or []:
                    content = (ch.get("delta") or {}).get("content")
                    if content:
                        if out["ttft"] is None:
                            out["ttft"] = time.perf_counter() - t0
                        out["chunks"] += 1
                        out["text"] += content
                    if ch.get("finish_reason"):
                        out["finish_reason"] = ch["finish_reason"]
    except (httpx.HTTPError, json.JSONDecodeError, OSError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["seconds"] = time.perf_counter() - t0
    return out


def new_client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0, connect=30.0))


def ok(r: dict) -> bool:
    return r["status"] == 200 and r["error"] is None and r["tokens"] is not None


async def stream_run(url: str, clients: int, rounds: int, max_tokens: int, min_tokens: int = 0) -> dict:
    """`clients` tasks, each sending `rounds` requests back to back; aggregate tokens/s over the wall time."""
    async with new_client() as client:
        warm = await chat(client, url, "Hello!", max_tokens, min_tokens)
        if not ok(warm):
            raise SystemExit(f"warmup request failed: {warm}")

        async def one(i):
            return [await chat(client, url, prompt(i, r), max_tokens, min_tokens) for r in range(rounds)]

        t0 = time.perf_counter()
        per_client = await asyncio.gather(*(one(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    results = [r for rs in per_client for r in rs]
    good = [r for r in results if ok(r)]
    tokens = sum(r["tokens"] for r in good)
    ttfts = [r["ttft"] for r in good if r["ttft"] is not None]
    return {
        "tokens_per_s": round(tokens / wall, 1),
        "wall_s": round(wall, 2),
        "requests": len(results),
        "failed": len(results) - len(good),
        "completion_tokens": tokens,
        "content_chunks": sum(r["chunks"] for r in good),
        "tokens_per_request": round(tokens / max(1, len(good)), 1),
        "ttft_p50_s": pct(ttfts, 0.5),
        "ttft_p99_s": pct(ttfts, 0.99),
        "finish_reasons": {k: sum(r["finish_reason"] == k for r in good) for k in {r["finish_reason"] for r in good}},
        "texts": [r["text"] for r in results],
        "errors": sorted({str(r["error"] or r["status"]) for r in results if not ok(r)})[:5],
    }


async def overload_run(url: str, clients: int, waves: int, max_tokens: int) -> dict:
    """`waves` times: `clients` requests at once, no retries; then /health."""
    results = []
    async with new_client() as client:
        warm = await chat(client, url, "Hello!", max_tokens)
        if not ok(warm):
            raise SystemExit(f"warmup request failed: {warm}")
        t0 = time.perf_counter()
        for w in range(waves):
            results += await asyncio.gather(*(chat(client, url, prompt(i, w), max_tokens) for i in range(clients)))
        wall = time.perf_counter() - t0
        try:
            h = await client.get(f"{url}/health", timeout=10)
            health = h.status_code == 200 and h.json().get("status") == "ok"
        except httpx.HTTPError:
            health = False
    good = [r for r in results if ok(r)]
    busy = [r for r in results if r["status"] == 429]
    ttfts = [r["ttft"] for r in good if r["ttft"] is not None]
    return {
        "requests": len(results),
        "ok_200": len(good),
        "rejected_429": len(busy),
        "rejected_429_with_retry_after": sum(r["retry_after"] is not None for r in busy),
        "retry_after_values": sorted({r["retry_after"] for r in busy if r["retry_after"] is not None}),
        "failed": len(results) - len(good) - len(busy),
        "wall_s": round(wall, 2),
        "ok_per_s": round(len(good) / wall, 2),
        "completion_tokens": sum(r["tokens"] for r in good),
        "tokens_per_s": round(sum(r["tokens"] for r in good) / wall, 1),
        "ttft_p50_s": pct(ttfts, 0.5),
        "ttft_p99_s": pct(ttfts, 0.99),
        "health_after": health,
        "errors": sorted({str(r["error"] or r["status"]) for r in results if not ok(r) and r["status"] != 429})[:5],
    }


def with_server(log_dir: Path, max_batch: int, max_queue: int, fn):
    """Start a server, run `fn(server)` (a coroutine function), stop it; the server must still be alive."""
    srv = ServerProcess(max_batch=max_batch, max_queue=max_queue, log_dir=log_dir)
    try:
        startup = srv.wait_ready()
        cpu0, client0 = cpu_seconds(srv.pid), time.process_time()
        out = asyncio.run(fn(srv))
        out["server_cpu_s"] = round(cpu_seconds(srv.pid) - cpu0, 2)  # warmup request included
        out["client_cpu_s"] = round(time.process_time() - client0, 2)
        alive = srv.proc.poll() is None
    finally:
        code = srv.close()
    if not alive:
        raise SystemExit(f"the server (max_batch={max_batch}) died during the run:\n{srv.tail()}")
    out["server_startup_s"] = round(startup, 2)
    out["server_exit_code"] = code  # after SIGTERM: uvicorn shuts down, then re-raises it (-15); 0 also clean
    return out


def stream_row(case: str, ours: dict, peer: dict, *, min_tokens: int, clients: int, rounds: int, batch: int,
               common: dict) -> dict:
    """One streaming case's result line: continuous batching (ours) against max_batch=1 (peer)."""
    same = sum(a == b for a, b in zip(ours.pop("texts"), peer.pop("texts")))
    return {
        "case": case,
        "unit": "tokens/s",
        "genloom": ours["tokens_per_s"],
        "peer": peer["tokens_per_s"],
        "peer_name": "the same server with max_batch=1 (one request at a time)",
        "ratio": round(ours["tokens_per_s"] / peer["tokens_per_s"], 3),
        "ttft_p50_s": ours["ttft_p50_s"], "ttft_p99_s": ours["ttft_p99_s"],
        "peer_ttft_p50_s": peer["ttft_p50_s"], "peer_ttft_p99_s": peer["ttft_p99_s"],
        "failed": ours["failed"], "peer_failed": peer["failed"],
        "requests": ours["requests"], "peer_requests": peer["requests"],
        "completion_tokens": ours["completion_tokens"], "peer_completion_tokens": peer["completion_tokens"],
        "content_chunks": ours["content_chunks"], "peer_content_chunks": peer["content_chunks"],
        "tokens_per_request": ours["tokens_per_request"],
        "wall_s": ours["wall_s"], "peer_wall_s": peer["wall_s"],
        "texts_equal_to_peer": f"{same}/{ours['requests']}",
        "finish_reasons": ours["finish_reasons"], "peer_finish_reasons": peer["finish_reasons"],
        "errors": ours["errors"] + peer["errors"],
        "server_exit_codes": [ours["server_exit_code"], peer["server_exit_code"]],
        "server_cpu_s": ours["server_cpu_s"], "peer_server_cpu_s": peer["server_cpu_s"],
        "client_cpu_s": ours["client_cpu_s"], "peer_client_cpu_s": peer["client_cpu_s"],
        "clients": clients, "rounds": rounds, "max_batch": batch, "peer_max_batch": 1, "max_queue": 64,
        "min_tokens": min_tokens or None,
        **common,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 / 32 clients, 16 tokens, 1 round, 1 wave")
    ap.add_argument("--clients", type=int, default=None, help="streaming clients (default 16; quick 8)")
    ap.add_argument("--rounds", type=int, default=None, help="requests per streaming client (default 16; quick 1)")
    ap.add_argument("--overload-clients", type=int, default=None, help="default 64; quick 32")
    ap.add_argument("--waves", type=int, default=None, help="overload waves (default 5; quick 1)")
    args = ap.parse_args(argv)
    q = args.quick
    clients = args.clients or (8 if q else 16)
    rounds = args.rounds or (1 if q else 16)
    over = args.overload_clients or (32 if q else 64)
    waves = args.waves or (1 if q else 5)
    max_tokens = 16 if q else 64
    batch, over_batch, over_queue = clients, over // 4, over // 4  # 16, 16 and 16 for the full run
    t_start = time.perf_counter()

    common = dict(model="models/chat", server_threads=SERVER_THREADS, temperature=0, max_tokens=max_tokens,
                  stream=True, client="httpx2" if httpx.__name__ == "httpx2" else "httpx", quick=q)
    name = "serve-16-clients-stream" if clients == 16 else f"serve-{clients}-clients-stream"
    stream_cases = [(name, 0), (f"{name}-{max_tokens}-tokens", max_tokens)]  # (case, min_tokens)
    rows = []
    with tempfile.TemporaryDirectory(prefix="genloom-bench-serve-") as tmp:
        log_dir = Path(tmp)

        for case, min_tokens in stream_cases:
            async def streams(srv, min_tokens=min_tokens):
                return await stream_run(srv.url, clients, rounds, max_tokens, min_tokens)

            runs = {}
            for b in (batch, 1):
                print(f"# {case}: {clients} streaming clients x {rounds} rounds, max_batch={b}", flush=True)
                runs[b] = with_server(log_dir, b, 64, streams)
                r = runs[b]
                print(f"#   {r['tokens_per_s']} tokens/s, ttft p50 {r['ttft_p50_s']} s, failed {r['failed']}", flush=True)
            rows.append(stream_row(case, runs[batch], runs[1], min_tokens=min_tokens, clients=clients, rounds=rounds,
                                   batch=batch, common=common))

        async def overload(srv):
            before = mem(srv.pid)
            out = await overload_run(srv.url, over, waves, max_tokens)
            out["mem_before_mib"], out["mem_after_mib"] = before, mem(srv.pid)
            return out

        print(f"# overload: {waves} waves of {over} clients, max_batch={over_batch}, max_queue={over_queue}", flush=True)
        ov = with_server(log_dir, over_batch, over_queue, overload)
        print(f"#   {ov['ok_200']} x 200, {ov['rejected_429']} x 429, failed {ov['failed']}", flush=True)

    rows.append({
        "case": "serve-64-clients-overload" if over == 64 else f"serve-{over}-clients-overload",
        "unit": "successful requests/s",
        "genloom": ov["ok_per_s"],
        "peer": None,
        "peer_name": None,
        **{k: v for k, v in ov.items() if k not in ("ok_per_s", "server_startup_s")},
        "clients": over, "waves": waves, "max_batch": over_batch, "max_queue": over_queue,
        **common,
    })
    for r in rows:
        r["threads"] = SERVER_THREADS  # the server's torch threads (the client process runs no torch)
        r["bench_seconds"] = round(time.perf_counter() - t_start, 1)
    report("serve-quick" if q else "serve", rows)


if __name__ == "__main__":
    main()
