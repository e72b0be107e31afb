"""Text engine for the server: continuous batching over one shared KV cache (vLLM's scheduler in miniature).

Requests wait in a bounded queue; at every scheduler step the free slots are filled from it, the
joiners are prefilled together as one left-padded batch (as stream_ids prefills its prompts) and their
keys/values are copied into the shared cache right-aligned to the current write column W, and then one
decode step runs for every running row. Rows that started at
different times coexist through per-row positions (B, 1) and a key-validity mask (B, 1, 1, S):
row r holds its n_r cached tokens in columns [W - n_r, W). Finished or cancelled rows leave at once
(the last row is moved into the hole), and the columns no row needs any more are dropped now and then.
Each request keeps its own logits processors, torch.Generator, repetition counts and stop rules, so its
output does not depend on what else is in the batch.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import AsyncIterator, Iterator

import torch

from genloom.errors import GenloomError
from genloom.models.gpt import KVCache, cache_layers
from genloom.safety.watermark import Watermarks
from genloom.sample import SamplingParams, TextStream, build_processors, left_pad, min_new_tokens_mask

log = logging.getLogger(__name__)
_ids = itertools.count(1)


def decode_threads(available: int) -> int:
    """The engine worker's intra-op threads: one core stays with the server's event loop (HTTP, SSE framing), as
    vLLM's CPU backend keeps one core off its OpenMP threads for its scheduler. A decode step's parallel regions
    wait for every thread they use, so a thread that shares its core with the event loop stalls every step."""
    return max(1, available - 1)


def own_threads(n: int) -> None:
    """Set the calling thread's intra-op threads (OpenMP and MKL keep them per thread) and leave the process default,
    which threads started later copy, as it was."""
    default = torch.get_num_threads()  # also initialises this thread's setting before it is changed
    torch.set_num_threads(n)  # this thread's, and the default new threads copy ...
    restore = threading.Thread(target=torch.set_num_threads, args=(default,))  # ... which a helper thread puts back
    restore.start()
    restore.join()


class QueueFull(Exception):
    """The waiting queue is at max_queue (an HTTP layer answers 429 or 503)."""


@dataclass
class Event:
    """One per generated token; the last one of a request carries its finish_reason."""

    text: str  # the new text (UTF-8 safe, stop strings never leaked); may be "" while held back
    token: int | None
    finish_reason: str | None = None  # None while running; then "stop" | "length" | "cancelled"
    stop_reason: str | None = None  # with "stop": the stop string that ended it (None: end-of-text)


class RequestHandle:
    """A submitted request: its events as they arrive (from any thread, or asyncio), cancel, result."""

    def __init__(self, engine: "TextEngine", prompt_ids: list[int], sp: SamplingParams, rid: str):
        self.id = rid
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0  # tokens generated so far (an end-of-text token included)
        self.submitted_at = time.monotonic()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self._engine, self._prompt, self._sp = engine, prompt_ids, sp
        self._events: list[Event] = []
        self._done = False
        self._error: BaseException | None = None
        self._cancel = False
        self._cond = threading.Condition()
        self._wakers: list = []  # callables that wake asyncio consumers

    @property
    def finished(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Frees the slot at the next step (a waiting request leaves the queue now); ends with "cancelled"."""
        self._cancel = True
        self._engine._cancelled(self)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Every event from the first, blocking; ends after the finishing one. TimeoutError after `timeout`
        seconds without a new event."""
        i = 0
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: i < len(self._events) or self._done, timeout):
                    raise TimeoutError(f"request {self.id}: no event within {timeout} s")
                batch, done, error = self._events[i:], self._done, self._error
            for ev in batch:
                i += 1
                yield ev
            if done and i == len(self._events):
                if error is not None:
                    raise error
                return

    async def aevents(self) -> AsyncIterator[Event]:
        """The same events for asyncio consumers: the worker wakes the loop, nothing polls."""
        wake = asyncio.Event()
        waker = (asyncio.get_running_loop(), wake.set)
        with self._cond:
            self._wakers.append(waker)
        i = 0
        try:
            while True:
                wake.clear()
                with self._cond:
                    batch, done, error = self._events[i:], self._done, self._error
                for ev in batch:
                    i += 1
                    yield ev
                if done and i == len(self._events):
                    if error is not None:
                        raise error
                    return
                if not batch:
                    await wake.wait()
        finally:
            with self._cond:
                self._wakers.remove(waker)

    def result(self, timeout: float | None = None) -> tuple[str, str]:
        """(full text, finish_reason), blocking; TimeoutError after `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError(f"request {self.id} did not finish within {timeout} s")
            if self._error is not None:
                raise self._error
            return "".join(e.text for e in self._events), self._events[-1].finish_reason

    def _push(self, ev: Event, woken: dict | None = None) -> None:
        """Add an event and wake the consumers; with `woken` ({loop: [callbacks]}) the asyncio ones are only
        collected there, for the caller to wake with one call per loop (wake_all) after the whole batch's events."""
        now = time.monotonic()
        with self._cond:
            if self._done:
                return
            if self.first_token_at is None and ev.token is not None:
                self.first_token_at = now
            self._events.append(ev)
            if ev.finish_reason is not None:
                self._done, self.finished_at = True, now
            self._cond.notify_all()
            wakers = list(self._wakers)
        if woken is None:
            wake_all(gather(wakers, {}))
        else:
            gather(wakers, woken)

    def _fail(self, error: BaseException) -> None:
        with self._cond:
            if self._done:
                return
            self._error, self._done, self.finished_at = error, True, time.monotonic()
            self._cond.notify_all()
            wakers = list(self._wakers)
        wake_all(gather(wakers, {}))


def gather(wakers: list[tuple], woken: dict) -> dict:
    """Asyncio consumers' (loop, callback) wakers into woken, {loop: [callbacks]}."""
    for loop, callback in wakers:
        woken.setdefault(loop, []).append(callback)
    return woken


def wake_all(woken: dict) -> None:
    """One thread-safe call per event loop runs all its callbacks: a batch's 16 events wake the loop once."""
    for loop, callbacks in woken.items():
        try:
            loop.call_soon_threadsafe(_run_all, callbacks)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


def _run_all(callbacks: list) -> None:
    for callback in callbacks:
        callback()


class _Row:
    """The decoding state of one running request."""

    def __init__(self, h: RequestHandle, model_cfg, vocab: int, device):
        sp = h._sp
        self.h, self.sp = h, sp
        self.procs = build_processors(sp)  # this request's own; the watermark is the engine's, one for every row
        self.stateful = [p for p in self.procs if hasattr(p, "observe")]  # a processor that reads the previous token
        for p in self.stateful:
            p.observe([h._prompt[-1]])
        self.prev = h._prompt[-1]  # the token before the next one (what the watermark's green list depends on)
        self.steps = min(sp.max_new_tokens, model_cfg.block_size - h.prompt_tokens + 1)  # as stream_ids
        self.n = h.prompt_tokens  # tokens in the cache
        self.start = 0  # the cache column of its first token
        self.gen = None
        if not sp.greedy:
            seed = sp.seed if sp.seed is not None else int(torch.randint(0, 2**62, (1,)))
            self.gen = torch.Generator(device=device).manual_seed(seed)
        self.counts = None
        if sp.repetition_penalty != 1.0 or sp.presence_penalty or sp.frequency_penalty:
            self.counts = torch.zeros(1, vocab, dtype=torch.int32, device=device)
            self.counts[0].index_add_(0, torch.tensor(h._prompt, device=device),
                                      torch.ones(h.prompt_tokens, dtype=torch.int32, device=device))
        self.stream = None  # TextStream, made by the engine (it has the tokenizer)


def checked_request(tok, cfg, prompt: str | list[int], sp: SamplingParams) -> tuple[list[int], SamplingParams]:
    """A request's prompt ids and its own copy of the sampling parameters, checked against the model's vocabulary
    and context (GenloomError naming what is wrong): what every engine does before it queues a request."""
    sp = dataclasses.replace(sp, stop=list(sp.stop))
    sp.check()
    if isinstance(prompt, str):
        ids = tok.encode(prompt)
    else:
        ids = [int(t) for t in prompt]
        if any(not 0 <= t < cfg.vocab_size for t in ids):
            raise GenloomError(f"prompt token ids must be in [0, {cfg.vocab_size})")
    if not ids:
        raise GenloomError("empty prompt: give at least one token of text")
    if len(ids) > cfg.block_size:
        raise GenloomError(f"prompt of {len(ids)} tokens exceeds the model's context of {cfg.block_size} tokens")
    return ids, sp


class TextEngine:
    """Continuous batching of text requests over one model, in a daemon worker thread."""

    Handle = RequestHandle  # what submit makes (the engine process's child makes handles that forward their events)

    def __init__(self, model, tokenizer, *, max_batch: int = 16, max_queue: int = 64, name: str = "",
                 watermarks: Watermarks | None = None, threads: int | None = None):
        """`watermarks`: the green-list mark every row gets (genloom.safety.watermark); None: unmarked.
        `threads`: the worker's intra-op threads (default: one fewer than torch's, at least 1; see decode_threads)."""
        # one green-list processor for the whole batch, told every row's previous token at each step
        self._mark = watermarks.text(model.config.vocab_size).processor() if watermarks is not None and watermarks.on else None
        self.threads = threads or decode_threads(torch.get_num_threads())
        if max_batch < 1 or max_queue < 0:
            raise GenloomError(f"max_batch must be >= 1 and max_queue >= 0 (got {max_batch}, {max_queue})")
        self.model, self.tok, self.name = model.eval(), tokenizer, name
        self.max_batch, self.max_queue = max_batch, max_queue
        self.cfg = model.config
        p = next(model.parameters())
        self.dtype, self.device = p.dtype, p.device
        self.eot = getattr(tokenizer, "eot_id", None)
        self._cond = threading.Condition()
        self._waiting: collections.deque[RequestHandle] = collections.deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._counters = collections.Counter()
        # the shared cache: per layer (max_batch, 2, n_kv_head, cap, hs); rows [0, B) are running
        hs = self.cfg.n_embd // self.cfg.n_head
        self._cap = self.cfg.block_size  # GPT._step checks cache.length against the context
        self._bufs = [torch.zeros(max_batch, 2, self.cfg.n_kv_head, self._cap, hs, dtype=self.dtype, device=self.device)
                      for _ in range(cache_layers(self.cfg))]
        self._cache = KVCache(self.cfg, 0, 0, dtype=self.dtype, device=self.device)
        self._rows: list[_Row] = []
        self._logits: torch.Tensor | None = None  # (B, V): each running row's next-token logits
        self._W = 0  # the shared write column

    # ----- the client side (any thread)

    def submit(self, prompt: str | list[int], sp: SamplingParams, rid: str | None = None) -> RequestHandle:
        """Validate and queue a request. GenloomError for a bad prompt or parameters; QueueFull when full.
        `rid`: the request's id (default: the engine's name and a counter)."""
        ids, sp = checked_request(self.tok, self.cfg, prompt, sp)
        h = self.Handle(self, ids, sp, rid or f"{self.name or 'req'}-{next(_ids)}")
        with self._cond:
            if self._stopping:
                raise GenloomError("the engine is stopped")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting (max_queue {self.max_queue})")
            self._waiting.append(h)
            self._counters["submitted"] += 1
            self._cond.notify_all()
        return h

    def stats(self) -> dict:
        c = self._counters
        return {"name": self.name, "running": len(self._rows), "waiting": len(self._waiting), "steps": c["steps"],
                "tokens_out": c["tokens_out"], "prompt_tokens": c["prompt_tokens"], "submitted": c["submitted"],
                "finished": c["finished"], "cancelled": c["cancelled"], "failed": c["failed"],
                "cache_shifts": c["cache_shifts"], "max_batch": self.max_batch, "max_queue": self.max_queue}

    def _cancelled(self, h: RequestHandle) -> None:
        with self._cond:
            try:
                self._waiting.remove(h)
            except ValueError:  # running (the worker ends it at its next step) or already finished
                self._cond.notify_all()
                return
            self._counters["cancelled"] += 1
        h._push(Event("", None, "cancelled"))

    # ----- the worker

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"genloom-engine-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Cancel everything pending (events end with "cancelled") and join the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._cond:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for h in waiting + [r.h for r in self._rows]:
            h._push(Event("", None, "cancelled"))
            self._counters["cancelled"] += 1
        self._remove(list(range(len(self._rows))))

    def _loop(self) -> None:
        own_threads(self.threads)
        with torch.inference_mode():
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping or self._rows or self._waiting)
                    if self._stopping:
                        return
                try:
                    self.step()
                except Exception as e:  # never leave clients hanging: fail the batch, keep serving
                    log.exception("engine %s: a decoding step failed", self.name)
                    for r in self._rows:
                        r.h._fail(RuntimeError(f"generation failed: {e}"))
                        self._counters["failed"] += 1
                    self._remove(list(range(len(self._rows))))

    @torch.inference_mode()
    def step(self) -> None:
        """One scheduler iteration: drop cancelled rows, admit joiners, sample a token per row, emit events,
        drop finished rows, run one decode step. The worker loops on it; tests may drive it by hand."""
        if self._thread is not None and threading.current_thread() is not self._thread:
            raise RuntimeError("step() is the worker's while the engine is started")
        gone = [i for i, r in enumerate(self._rows) if r.h._cancel]
        for i in gone:
            self._rows[i].h._push(Event("", None, "cancelled"))
            self._counters["cancelled"] += 1
        self._remove(gone)
        self._admit()
        if not self._rows:
            return
        toks, failed = self._sample()
        finished, woken = [], {}
        for i, (r, t) in enumerate(zip(self._rows, toks)):
            if i not in failed:
                try:
                    ev = self._event(r, t)
                except Exception as e:  # noqa: BLE001 - this row's text failed (a tokenizer bug): it alone ends
                    failed[i] = e
            if i in failed:
                finished.append(i)
                continue
            r.h._push(ev, woken)
            self._counters["tokens_out"] += 1
            if ev.finish_reason is not None:
                finished.append(i)
                self._counters["finished"] += 1
        wake_all(woken)  # one wake-up per event loop for the whole batch
        self._fail_requests([(self._rows[i].h, e) for i, e in failed.items()])
        order = self._remove(finished)  # the kept rows' old indices, in their new order
        if self._rows:
            self._decode([toks[j] for j in order])

    def _event(self, r: _Row, t: int) -> Event:
        """Row r's event for its new token t: its text so far, and a finish_reason when it is done."""
        r.h.completion_tokens += 1
        r.prev = t
        if r.counts is not None:
            r.counts[0, t] += 1
        for p in r.stateful:
            p.observe([t])
        if r.sp.stop_at_eot and t == self.eot:
            return Event(r.stream.finish(), t, "stop")
        text = r.stream.push(t)
        if r.stream.stopped:
            return Event(text, t, "stop", r.stream.stop_reason)
        if r.h.completion_tokens >= r.steps:
            return Event(text + r.stream.finish(), t, "length")
        return Event(text, t)

    def _fail_requests(self, failed: list[tuple[RequestHandle, Exception]]) -> None:
        """Tell each of these requests its error (their rows leave at the caller's _remove); no other one ends."""
        for h, e in failed:
            log.warning("engine %s: request %s failed: %r", self.name, h.id, e)
            h._fail(RuntimeError(f"generation failed: {e}"))
            self._counters["failed"] += 1

    def _sample(self) -> tuple[list[int], dict]:
        """Each row's next token with its own processors and generator (as stream_ids does for one row), and
        {row: error} for the rows whose sampling failed (only those rows fail)."""
        logits = self._logits.float()  # (B, V)
        early = [i for i, r in enumerate(self._rows) if r.h.completion_tokens < r.sp.min_new_tokens]
        if early:
            logits = min_new_tokens_mask(logits, self.eot, early)
        if self._mark is not None:  # every row's green list in one call: the same sums as row by row
            self._mark.observe([r.prev for r in self._rows])
            logits = self._mark(None, logits)
        plain = [i for i, r in enumerate(self._rows) if r.sp.greedy and not r.procs]
        toks, failed = [0] * len(self._rows), {}
        if plain:
            best = logits[plain].argmax(-1).tolist() if len(plain) < len(toks) else logits.argmax(-1).tolist()
            for i, t in zip(plain, best):
                toks[i] = t
        for i, r in enumerate(self._rows):
            if r.sp.greedy and not r.procs:
                continue
            try:
                row = logits[i : i + 1]  # (1, V)
                for proc in r.procs:
                    row = proc(r.counts, row)
                if r.gen is None:
                    toks[i] = int(row.argmax(-1))
                else:
                    toks[i] = int(torch.multinomial(row.softmax(-1)[0], 1, generator=r.gen))
            except Exception as e:  # noqa: BLE001 - e.g. a distribution of NaNs: this request alone fails
                failed[i] = e
        return toks, failed

    def _admit(self) -> None:
        """Fill free slots from the queue: prefill the joiners together, copy their K/V right-aligned to W."""
        joiners = []
        with self._cond:
            while not self._stopping and self._waiting and len(self._rows) + len(joiners) < self.max_batch:
                joiners.append(self._waiting.popleft())
        if not joiners:
            return
        try:
            self._prefill(joiners)
        except Exception as e:  # noqa: BLE001 - find the joiner that fails: the others and the running rows go on
            if len(joiners) == 1:
                self._fail_requests([(joiners[0], e)])
                return
            for h in joiners:
                try:
                    self._prefill([h])
                except Exception as e1:  # noqa: BLE001
                    self._fail_requests([(h, e1)])

    def _prefill(self, joiners: list[RequestHandle]) -> None:
        """One forward pass over the joiners' left-padded prompts; row j's last P_j columns are its K/V.
        Everything that may fail comes before the first change to the running batch."""
        rows = []
        for h in joiners:
            r = _Row(h, self.cfg, self.cfg.vocab_size, self.device)
            r.stream = TextStream(self.tok, h._sp.stop, h._sp.min_new_tokens)
            rows.append(r)
        n = len(joiners)
        ids, pos, _, mask = left_pad([h._prompt for h in joiners], self.device)  # (n, L)
        L = ids.size(1)
        tmp = KVCache(self.cfg, n, L, dtype=self.dtype, device=self.device)
        logits, _ = self.model(ids, cache=tmp, pos=pos, mask=mask, last_only=True)  # (n, 1, V)
        self._counters["prompt_tokens"] += sum(h.prompt_tokens for h in joiners)
        if not self._rows:
            self._W = 0
        if L > self._W:  # make room on the left: shift every running row right
            self._shift(L - self._W)
        b, W = len(self._rows), self._W
        for buf, kv in zip(self._bufs, tmp.kv):  # padding columns land left of each row's start: never attended
            buf[b : b + n, :, :, W - L : W] = kv  # (n, 2, n_kv_head, L, hs)
        for r in rows:
            r.start = W - r.n
        self._rows += rows
        self._set_batch()
        old = [self._logits] if self._logits is not None and b > 0 else []
        self._logits = torch.cat(old + [logits[:, -1]])  # (B, V), in step with the rows

    def _decode(self, toks: list[int]) -> None:
        """One decode step for every running row: logits for their next tokens."""
        W = self._W
        lo = min(r.start for r in self._rows)
        if W + 1 > self._cap or lo >= max(8, self.cfg.block_size // 4):
            self._shift(-lo)  # drop the columns no row needs
            W = self._W
        starts = [r.start for r in self._rows]
        ids = torch.tensor(toks, dtype=torch.long, device=self.device).unsqueeze(1)  # (B, 1)
        pos = mask = None
        if any(starts):
            st = torch.tensor(starts, device=self.device)
            pos = (W - st).unsqueeze(1)  # (B, 1): each row's next position
            cols = torch.arange(W + 1, device=self.device)
            mask = (cols.unsqueeze(0) >= st.unsqueeze(1))[:, None, None, :]  # (B, 1, 1, W + 1)
        self._cache.length = W
        failed = {}
        try:
            logits, _ = self.model(ids, cache=self._cache, pos=pos, mask=mask, last_only=True)  # (B, 1, V)
            logits = logits[:, -1]
        except Exception:  # find the row that fails: the others go on
            if len(self._rows) == 1:
                raise
            logits, failed = self._decode_alone(ids, starts, W)
        self._logits = logits
        self._W = W + 1
        for r in self._rows:
            r.n += 1
        self._counters["steps"] += 1
        self._fail_requests([(self._rows[i].h, e) for i, e in failed.items()])
        self._remove(list(failed))

    def _decode_alone(self, ids: torch.Tensor, starts: list[int], W: int) -> tuple[torch.Tensor, dict]:
        """After a failed decode step: each row's step on its own rows of the shared cache. (B, V) logits (zeros
        for a failing row) and {row: error}."""
        out, failed = [], {}
        cols = torch.arange(W + 1, device=self.device)
        for i, st in enumerate(starts):
            cache = KVCache(self.cfg, 0, 0, dtype=self.dtype, device=self.device)
            cache.kv = [buf[i : i + 1] for buf in self._bufs]  # views: the step writes into the shared cache
            cache._split()
            cache.length, cache.weights = W, self._cache.weights
            pos = torch.tensor([[W - st]], device=self.device)  # (1, 1)
            mask = (cols >= st)[None, None, None, :]  # (1, 1, 1, W + 1)
            try:
                logits, _ = self.model(ids[i : i + 1], cache=cache, pos=pos, mask=mask, last_only=True)
                out.append(logits[:, -1])
            except Exception as e:  # noqa: BLE001
                failed[i] = e
                out.append(torch.zeros(1, self.cfg.vocab_size, dtype=self.dtype, device=self.device))
        return torch.cat(out), failed

    def _shift(self, off: int) -> None:
        """Move every running row's columns by `off` (right if > 0), keeping W - start per row."""
        B, W = len(self._rows), self._W
        lo = min((r.start for r in self._rows), default=W)
        self._counters["cache_shifts"] += 1
        if B and W > lo:
            for buf in self._bufs:
                buf[:B, :, :, lo + off : W + off] = buf[:B, :, :, lo:W].clone()
        for r in self._rows:
            r.start += off
        self._W = W + off

    def _remove(self, gone: list[int]) -> list[int]:
        """Drop rows: the last kept rows move into the holes. Returns the old indices in their new order."""
        B = len(self._rows)
        order = list(range(B))
        if not gone:
            return order
        gone_set = set(gone)
        k = B - len(gone_set)
        holes = [i for i in range(k) if i in gone_set]
        movers = [i for i in range(k, B) if i not in gone_set]
        for hole, src in zip(holes, movers):
            for buf in self._bufs:
                buf[hole, :, :, : self._W] = buf[src, :, :, : self._W]
            self._rows[hole] = self._rows[src]
            order[hole] = src
        del self._rows[k:]
        order = order[:k]
        if self._logits is not None:
            self._logits = self._logits[order]
        self._set_batch()
        return order

    def _set_batch(self) -> None:
        B = len(self._rows)
        self._cache.kv = [buf[:B] for buf in self._bufs]
        self._cache._split()
        if B == 0:
            self._W = 0
