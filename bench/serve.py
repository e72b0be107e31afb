"""Serving: concurrent streaming chat clients on loopback against `genloom serve` (the bundled models/chat).

The server runs in its own process (genloom.serve.app.serve, 2 torch threads, no storage, no jobs worker,
log level warning), so clients and server do not share a GIL; the clients wait for /health first. Clients
are asyncio tasks on one httpx2 (httpx) AsyncClient, each streaming POST /v1/chat/completions with
temperature 0, max_tokens 64, stream_options.include_usage, and its own prompt. Tokens are the server's
usage.completion_tokens; time to first token (TTFT) is from sending the request to the first SSE chunk with
non-empty delta.content. One warmup request precedes each timed run. The bundled chat model's greedy
replies mostly end (stop) after about ten tokens, well before max_tokens, so these runs weigh prefill and
per-request HTTP work as much as decoding; tokens_per_request in the output says how long replies were.

Both servers of a comparison are the same create_app with the same settings, as `genloom serve` sets them except
where said: watermark on (the installation key in ./genloom-data), the engine's worker on decode_threads(2) = 1
intra-op thread (one core left to the event loop), labels on; moderation off (create_app without a policy;
`genloom serve` defaults to block, which screens every prompt and every 24 characters of output with the
moderation classifier, the same work per request on both sides), no data directory (no history rows), no jobs
worker. They differ only in max_batch. Beside tokens/s (wall clock) each row gives tokens per server CPU-second
(all the server's threads): on a shared machine the wall-clock rate follows the load, the CPU cost per token much less.

Cases:
  serve-16-clients-stream    16 clients x 16 requests; tokens/s with continuous batching (max_batch=16)
                             against the same server forced to one request at a time (max_batch=1),
                             max_queue 64. Both servers run side by side for the whole case and take turns:
                             the rounds are cut into blocks of --block rounds (16 clients x 4 requests back to
                             back by default), and the blocks alternate between the servers (A B, B A, ...),
                             so a change of load on the machine hits both. genloom/peer = the best block's
                             tokens/s, *_median = the median block's, *_aggregate = all tokens / all block time.
  serve-16-clients-stream-64-tokens
                             the same with a fixed output length: every request also sends the extra field
                             min_tokens = max_tokens = 64 (vLLM's extension; its benchmark_serving fixes
                             output lengths the same way with ignore_eos), so each reply is 64 tokens and
                             decoding, not per-request work, dominates.
  serve-16-clients-stream-poisoned
                             issue 11's "one request must never fail another": the 16 clients send --poison-rounds
                             64-token requests each (more while not every poison has been answered once) to the
                             batching server while 4 more clients send poisoned
                             requests back to back into the same batch (temperature 1e-40, top_p 1e-46, seed 2**64
                             and -2**63-1, NaN and Infinity in sampling fields, huge integers, a lone surrogate
                             in the prompt, ...; see POISONS). genloom = innocent requests that failed (an error
                             status, an error event, no usage, or no answer within 120 s; 0 is right); also how
                             many innocent texts differ from the same requests in the clean 64-token case, each
                             poison's outcomes (a 400 is right), and whether the server still answers /health.
  serve-64-clients-overload  5 waves of 64 simultaneous clients against max_batch=16, max_queue=16:
                             200s vs 429s (each 429 must carry Retry-After, nobody retries), failures,
                             the server's VmHWM/VmRSS before and after, /health afterwards.
                             genloom = successful requests/s over the waves; no peer.

    python bench/serve.py            # full run -> bench/results/serve.jsonl
    python bench/serve.py --quick    # 8 clients, 16 tokens, 2 rounds / 1 wave -> bench/results/serve-quick.jsonl

The two streaming cases share one pair of servers (one warm-up request each per case); the poisoned case
runs last on the batching one; the overload case gets a fresh server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
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
    """User + system CPU time a process and its live child processes (an engine process per text model with
    `--engine process`) have used so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    kids = [int(k) for t in Path(f"/proc/{pid}/task").glob("*/children") for k in t.read_text().split()]
    return own + sum(cpu_seconds(k) for k in kids if Path(f"/proc/{k}/stat").exists())


def mem(pid: int) -> dict:
    """Peak and current resident memory of a process in MiB (/proc/PID/status VmHWM, VmRSS)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = round(int(val.split()[0]) / 1024, 1)
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChildServer:
    """A genloom server in a child process on `port`, its output in `log`; ready once /health says ok."""

    def __init__(self, cmd: list[str], *, port: int, threads: int, log: Path):
        self.port, self.log = port, log
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds until /health answered ok; exits the benchmark with the log's tail if it never does."""
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


class ServerProcess(ChildServer):
    """`genloom.serve.app.serve` with one batch size and queue bound, on a free loopback port."""

    def __init__(self, *, max_batch: int, max_queue: int, log_dir: Path, compile_decode: bool = False,
                 engine: str = "thread"):
        port = free_port()
        self.settings = dict(max_batch=max_batch, max_queue=max_queue, jobs=False, threads=SERVER_THREADS,
                             compile=compile_decode, engine=engine)
        code = (
            "import torch; torch.set_num_threads(%d)\n"
            "from genloom.serve.app import serve\n"
            "serve([%r], port=%d, log_level='warning', max_batch=%d, max_queue=%d, jobs=False, compile_decode=%r, "
            "engine=%r)\n"
            % (SERVER_THREADS, str(MODEL), port, max_batch, max_queue, compile_decode, engine)
        )
        super().__init__([sys.executable, "-c", code], port=port, threads=SERVER_THREADS,
                         log=log_dir / f"server-b{max_batch}-q{max_queue}.log")


def chat_body(text: str, max_tokens: int, min_tokens: int = 0) -> dict:
    """A greedy streaming chat request; min_tokens > 0 sends vLLM's extra field (openai clients: extra_body)."""
    body = {"model": "chat", "messages": [{"role": "user", "content": text}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    if min_tokens:
        body["min_tokens"] = min_tokens
    return body


async def chat(client: httpx.AsyncClient, url: str, text: str, max_tokens: int, min_tokens: int = 0) -> dict:
    """One streaming chat request: status, TTFT, content chunks, completion tokens, text, Retry-After."""
    return await send(client, url, chat_body(text, max_tokens, min_tokens))


async def send(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    """POST a chat body, as bytes from json.dumps (NaN, Infinity, lone surrogates and huge ints go through as
    a careless or hostile client would send them); read the SSE stream or the JSON answer."""
    out = {"status": None, "ttft": None, "chunks": 0, "tokens": None, "text": "", "error": None,
           "retry_after": None, "finish_reason": None}
    content = json.dumps(body).encode()
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", content=content,
                                 headers={"content-type": "application/json"}) as resp:
            out["status"] = resp.status_code
            if resp.status_code != 200:
                out["retry_after"] = resp.headers.get("retry-after")
                await resp.aread()
                out["error"] = resp.text[:200]
                return out
            if not body.get("stream"):
                await resp.aread()
                ans = json.loads(resp.text)
                out["tokens"] = (ans.get("usage") or {}).get("completion_tokens")
                out["text"] = "".join((c.get("message") or {}).get("content") or "" for c in ans.get("choices", []))
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


async def run_block(client, url: str, clients: int, rounds: range, max_tokens: int, min_tokens: int):
    """`clients` tasks, each sending one request per round back to back; {(client, round): result}, wall s."""
    async def one(i):
        return [((i, r), await chat(client, url, prompt(i, r), max_tokens, min_tokens)) for r in rounds]

    t0 = time.perf_counter()
    per_client = await asyncio.gather(*(one(i) for i in range(clients)))
    return dict(x for xs in per_client for x in xs), time.perf_counter() - t0


async def compare_run(servers: dict, clients: int, rounds: int, block: int, max_tokens: int,
                      min_tokens: int = 0) -> dict:
    """The same requests to every server, in blocks of `block` rounds that alternate between the servers."""
    sides = {name: {"results": {}, "walls": [], "block_tokens": [], "client_cpu": 0.0} for name in servers}
    async with new_client() as client:
        for srv in servers.values():
            warm = await chat(client, srv.url, "Hello!", max_tokens, min_tokens)
            if not ok(warm):
                raise SystemExit(f"warmup request failed: {warm}")
        cpu0 = {name: cpu_seconds(srv.pid) for name, srv in servers.items()}
        names = list(servers)
        for k, start in enumerate(range(0, rounds, block)):
            for name in names if k % 2 == 0 else names[::-1]:
                c0 = time.process_time()
                res, wall = await run_block(client, servers[name].url, clients, range(start, min(rounds, start + block)),
                                            max_tokens, min_tokens)
                side = sides[name]
                side["client_cpu"] += time.process_time() - c0
                side["results"].update(res)
                side["walls"].append(wall)
                side["block_tokens"].append(sum(r["tokens"] for r in res.values() if ok(r)))
        cpu = {name: cpu_seconds(srv.pid) - cpu0[name] for name, srv in servers.items()}
    return {name: summarize(side, cpu[name]) for name, side in sides.items()}


def summarize(side: dict, server_cpu: float) -> dict:
    results = side["results"]
    good = [r for r in results.values() if ok(r)]
    tokens = sum(r["tokens"] for r in good)
    ttfts = [r["ttft"] for r in good if r["ttft"] is not None]
    block_rates = [t / w for t, w in zip(side["block_tokens"], side["walls"])]
    return {
        "tokens_per_s": round(max(block_rates), 1),
        "tokens_per_s_median": round(statistics.median(block_rates), 1),
        "tokens_per_s_aggregate": round(tokens / sum(side["walls"]), 1),
        "blocks": len(block_rates),
        "wall_s": round(sum(side["walls"]), 2),
        "requests": len(results),
        "failed": len(results) - len(good),
        "completion_tokens": tokens,
        "content_chunks": sum(r["chunks"] for r in good),
        "tokens_per_request": round(tokens / max(1, len(good)), 1),
        "ttft_p50_s": pct(ttfts, 0.5),
        "ttft_p99_s": pct(ttfts, 0.99),
        "finish_reasons": {k: sum(r["finish_reason"] == k for r in good) for k in {r["finish_reason"] for r in good}},
        "texts": {key: r["text"] for key, r in results.items()},
        "errors": sorted({str(r["error"] or r["status"]) for r in results.values() if not ok(r)})[:5],
        "server_cpu_s": round(server_cpu, 2),
        "tokens_per_server_cpu_s": round(tokens / server_cpu, 1) if server_cpu else None,
        "client_cpu_s": round(side["client_cpu"], 2),
    }


NAN, INF = math.nan, math.inf
POISONS = [  # (name, fields over a sampled chat request): each must get a 400 and hurt no one else
    ("temperature 1e-40", {"temperature": 1e-40}),
    ("top_p 1e-46", {"top_p": 1e-46}),
    ("seed 2**64", {"seed": 2**64}),
    ("seed -2**63-1", {"seed": -(2**63) - 1}),
    ("temperature NaN", {"temperature": NAN}),
    ("top_p NaN", {"top_p": NAN}),
    ("min_p NaN", {"min_p": NAN}),
    ("presence_penalty NaN", {"presence_penalty": NAN}),
    ("frequency_penalty Infinity", {"frequency_penalty": INF}),
    ("repetition_penalty Infinity", {"repetition_penalty": INF}),
    ("repetition_penalty 1e-300", {"repetition_penalty": 1e-300}),
    ("top_k 2**63", {"top_k": 2**63}),
    ("max_tokens 2**64", {"max_tokens": 2**64}),
    ("min_tokens 2**64", {"min_tokens": 2**64}),
    ("logit_bias NaN", {"logit_bias": {"0": NAN}}),
    ("lone surrogate in the prompt", {"messages": [{"role": "user", "content": "hi \ud800 there"}]}),
]


def poisoned(k: int) -> tuple[str, dict]:
    """The k-th poisoned request (cycling through POISONS; streaming on even k, not on odd ones)."""
    name, fields = POISONS[k % len(POISONS)]
    body = {"model": "chat", "messages": [{"role": "user", "content": "Tell me a joke."}], "temperature": 1.0,
            "max_tokens": 16, "stream": k % 2 == 0, "seed": 1}
    return name, {**body, **fields}


async def poison_run(url: str, clients: int, rounds: int, max_tokens: int, poisoners: int, reference: dict,
                     timeout: float = 120.0) -> dict:
    """Innocent 64-token streams from `clients` clients while `poisoners` clients send POISONS back to back.
    Each innocent client sends `rounds` requests, and more while not every poison has been answered once."""
    done, passed = asyncio.Event(), asyncio.Event()
    outcomes: dict[str, dict[str, int]] = {}
    async with new_client() as client:

        async def innocent(i):
            out, r = [], 0
            while (r < rounds or not passed.is_set()) and r < 4 * rounds + 16:
                try:
                    res = await asyncio.wait_for(chat(client, url, prompt(i, r), max_tokens, max_tokens), timeout)
                except asyncio.TimeoutError:
                    res = {"status": None, "error": f"no answer within {timeout:.0f} s", "tokens": None, "text": ""}
                out.append(((i, r), res))
                r += 1
            return out

        async def poisoner(j):
            k = j
            await asyncio.sleep(0.05 + 0.01 * j)  # the innocent requests are in the batch by now
            while not done.is_set():
                name, body = poisoned(k)
                try:
                    res = await asyncio.wait_for(send(client, url, body), timeout)
                except asyncio.TimeoutError:
                    res = {"status": None, "error": f"no answer within {timeout:.0f} s"}
                if res["status"] is None:
                    kind = f"no status ({str(res['error'])[:60]})"
                else:
                    kind = str(res["status"]) + (" + error event" if res["status"] == 200 and res["error"] else "")
                outcomes.setdefault(name, {})
                outcomes[name][kind] = outcomes[name].get(kind, 0) + 1
                if sum(sum(v.values()) for v in outcomes.values()) >= len(POISONS):
                    passed.set()  # poisoner j sends POISONS j, j + poisoners, ...: together each one at least once
                k += poisoners
                await asyncio.sleep(0.01)

        async def innocents():
            try:
                return await asyncio.gather(*(innocent(i) for i in range(clients)))
            finally:
                done.set()

        t0 = time.perf_counter()
        per_client, *_ = await asyncio.gather(innocents(), *(poisoner(j) for j in range(poisoners)))
        wall = time.perf_counter() - t0
        health = await healthy(client, url)
    results = dict(x for xs in per_client for x in xs)
    good = {key: r for key, r in results.items() if ok(r)}
    return {
        "innocent_requests": len(results),
        "innocent_failed": len(results) - len(good),
        "innocent_texts_changed": sum(r["text"] != reference[key] for key, r in good.items() if key in reference),
        "innocent_texts_compared": sum(key in reference for key in good),
        "innocent_errors": sorted({str(r["error"] or r["status"])[:120] for r in results.values() if not ok(r)})[:5],
        "poisoned_requests": sum(sum(v.values()) for v in outcomes.values()),
        "poisoned_outcomes": dict(sorted(outcomes.items())),
        "poisoned_answered_400": sum(v.get("400", 0) for v in outcomes.values()),
        "poisoned_answered_5xx": sum(n for v in outcomes.values() for k, n in v.items() if k.startswith("5")),
        "health_after": health,
        "wall_s": round(wall, 2),
    }


async def healthy(client, url: str) -> bool:
    """Whether /health answers 200 with status "ok" within 10 s."""
    try:
        h = await client.get(f"{url}/health", timeout=10)
        return h.status_code == 200 and h.json().get("status") == "ok"
    except httpx.HTTPError:
        return False


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
        health = await healthy(client, url)
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


def with_server(log_dir: Path, max_batch: int, max_queue: int, fn, engine: str = "thread"):
    """Start a server, run `fn(server)` (a coroutine function), stop it; the server must still be alive."""
    srv = ServerProcess(max_batch=max_batch, max_queue=max_queue, log_dir=log_dir, engine=engine)
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


def stream_row(case: str, ours: dict, peer: dict, *, min_tokens: int, clients: int, rounds: int, block: int,
               batch: int, common: dict) -> dict:
    """One streaming case's result line: continuous batching (ours) against max_batch=1 (peer)."""
    ours_texts, peer_texts = ours.pop("texts"), peer.pop("texts")
    same = sum(ours_texts[k] == peer_texts.get(k) for k in ours_texts)
    return {
        "case": case,
        "unit": "tokens/s",
        "genloom": ours["tokens_per_s"],
        "peer": peer["tokens_per_s"],
        "peer_name": "the same server with max_batch=1 (one request at a time)",
        "ratio": round(ours["tokens_per_s"] / peer["tokens_per_s"], 3),
        "genloom_median": ours["tokens_per_s_median"], "peer_median": peer["tokens_per_s_median"],
        "ratio_median": round(ours["tokens_per_s_median"] / peer["tokens_per_s_median"], 3),
        "genloom_aggregate": ours["tokens_per_s_aggregate"], "peer_aggregate": peer["tokens_per_s_aggregate"],
        "ratio_aggregate": round(ours["tokens_per_s_aggregate"] / peer["tokens_per_s_aggregate"], 3),
        "stat": f"best and median over {ours['blocks']} blocks per server of {block} rounds x {clients} clients, "
                "blocks alternating between the two servers (A B, B A, ...)",
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
        "server_cpu_s": ours["server_cpu_s"], "peer_server_cpu_s": peer["server_cpu_s"],
        # tokens per CPU-second of each server (all its threads): what a busy machine changes least
        "tokens_per_server_cpu_s": ours["tokens_per_server_cpu_s"],
        "peer_tokens_per_server_cpu_s": peer["tokens_per_server_cpu_s"],
        "ratio_per_server_cpu_s": round(ours["tokens_per_server_cpu_s"] / peer["tokens_per_server_cpu_s"], 3)
        if ours["tokens_per_server_cpu_s"] and peer["tokens_per_server_cpu_s"] else None,
        "client_cpu_s": ours["client_cpu_s"], "peer_client_cpu_s": peer["client_cpu_s"],
        "clients": clients, "rounds": rounds, "block": block, "max_batch": batch, "peer_max_batch": 1,
        "max_queue": 64, "min_tokens": min_tokens or None,
        **common,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 / 32 clients, 16 tokens, 2 rounds, 1 wave")
    ap.add_argument("--compile", action="store_true", help="both servers decode with the compiled step "
                    "(`genloom serve --compile`; the first start compiles, minutes, then the on-disk cache)")
    ap.add_argument("--engine", choices=["thread", "process"], default="thread", help="where both servers decode "
                    "(`genloom serve --engine`): a thread of the server (default) or a child process per model")
    ap.add_argument("--clients", type=int, default=None, help="streaming clients (default 16; quick 8)")
    ap.add_argument("--rounds", type=int, default=None, help="requests per streaming client (default 16; quick 2)")
    ap.add_argument("--block", type=int, default=None, help="rounds per block (default 4; quick 1)")
    ap.add_argument("--poison-rounds", type=int, default=None, help="innocent requests per client in the "
                    "poisoned case (default 4; quick 1; at most --rounds)")
    ap.add_argument("--overload-clients", type=int, default=None, help="default 64; quick 32")
    ap.add_argument("--waves", type=int, default=None, help="overload waves (default 5; quick 1)")
    args = ap.parse_args(argv)
    q = args.quick
    clients = args.clients or (8 if q else 16)
    rounds = args.rounds or (2 if q else 16)
    block = args.block or (1 if q else 4)
    poison_rounds = min(rounds, args.poison_rounds or (1 if q else 4))
    over = args.overload_clients or (32 if q else 64)
    waves = args.waves or (1 if q else 5)
    max_tokens = 16 if q else 64
    batch, over_batch, over_queue = clients, over // 4, over // 4  # 16, 16 and 16 for the full run
    t_start = time.perf_counter()

    common = dict(model="models/chat", server_threads=SERVER_THREADS, temperature=0, max_tokens=max_tokens,
                  stream=True, client="httpx2" if httpx.__name__ == "httpx2" else "httpx", quick=q,
                  compiled_step=args.compile, engine=args.engine)
    name = "serve-16-clients-stream" if clients == 16 else f"serve-{clients}-clients-stream"
    stream_cases = [(name, 0), (f"{name}-{max_tokens}-tokens", max_tokens)]  # (case, min_tokens)
    rows = []
    with tempfile.TemporaryDirectory(prefix="genloom-bench-serve-") as tmp:
        log_dir = Path(tmp)
        servers = {"ours": ServerProcess(max_batch=batch, max_queue=64, log_dir=log_dir, compile_decode=args.compile,
                                         engine=args.engine),
                   "peer": ServerProcess(max_batch=1, max_queue=64, log_dir=log_dir, compile_decode=args.compile,
                                         engine=args.engine)}
        try:
            for srv in servers.values():
                srv.wait_ready()
            reference = {}
            for case, min_tokens in stream_cases:
                print(f"# {case}: {clients} clients x {rounds} rounds, blocks of {block} alternating between "
                      f"max_batch={batch} and max_batch=1", flush=True)
                runs = asyncio.run(compare_run(servers, clients, rounds, block, max_tokens, min_tokens))
                for side, r in runs.items():
                    print(f"#   {side}: best {r['tokens_per_s']}, median {r['tokens_per_s_median']} tokens/s, "
                          f"ttft p50 {r['ttft_p50_s']} s, failed {r['failed']}", flush=True)
                if min_tokens:
                    reference = dict(runs["ours"]["texts"])
                rows.append(stream_row(case, runs["ours"], runs["peer"], min_tokens=min_tokens, clients=clients,
                                       rounds=rounds, block=block, batch=batch, common=common))
            dead = [n for n, srv in servers.items() if srv.proc.poll() is not None]
            if dead:
                raise SystemExit(f"the server(s) {dead} died during the streaming cases:\n{servers[dead[0]].tail()}")
            print(f"# poisoned: {clients} clients x {poison_rounds} rounds of {max_tokens} tokens, 4 poisoning clients",
                  flush=True)
            po = asyncio.run(poison_run(servers["ours"].url, clients, poison_rounds, max_tokens, 4, reference))
            po["server_alive_after"] = servers["ours"].proc.poll() is None
            print(f"#   innocent failed {po['innocent_failed']}/{po['innocent_requests']}, "
                  f"texts changed {po['innocent_texts_changed']}, poisoned {po['poisoned_requests']} "
                  f"({po['poisoned_answered_400']} x 400, {po['poisoned_answered_5xx']} x 5xx)", flush=True)
        finally:
            codes = {n: srv.close() for n, srv in servers.items()}
        for r in rows:
            r["server_exit_codes"] = [codes["ours"], codes["peer"]]
        rows.append({"case": f"{name}-poisoned", "unit": "innocent requests failed (0 is right)",
                     "genloom": po["innocent_failed"], "peer": None, "peer_name": None, **po,
                     "clients": clients, "rounds": poison_rounds, "poisoning_clients": 4, "max_batch": batch,
                     "max_queue": 64, "min_tokens": max_tokens, "server_exit_code": codes["ours"], **common})

        async def overload(srv):
            before = mem(srv.pid)
            out = await overload_run(srv.url, over, waves, max_tokens)
            out["mem_before_mib"], out["mem_after_mib"] = before, mem(srv.pid)
            return out

        print(f"# overload: {waves} waves of {over} clients, max_batch={over_batch}, max_queue={over_queue}", flush=True)
        ov = with_server(log_dir, over_batch, over_queue, overload, engine=args.engine)
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
    # bench/results/serve[-compile][-process][-quick].jsonl: each setting keeps its own rows
    report("serve" + "-compile" * args.compile + f"-{args.engine}" * (args.engine != "thread") + "-quick" * q, rows)


if __name__ == "__main__":
    main()
