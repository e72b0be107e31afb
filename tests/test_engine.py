"""The serving engine: continuous batching must give each request what generate() gives it alone."""

import asyncio
import dataclasses
import string
import threading
import time

import pytest
import torch

from genloom.data.tokenizers import CharTokenizer
from genloom.errors import GenloomError
from genloom.sample import SamplingParams, generate
from genloom.serve.engine import Event, QueueFull, TextEngine

from conftest import random_gpt

GREEDY = dict(temperature=0.0)
LETTERS = list(string.ascii_letters[:50])
PROMPTS = ["abc", "q", "helloWorldAgain", "xyzXabcdefghijklmAB", "mnop", "AAAAAAAAAAAAAAAAAAAAAAAAAA"]


def tiny_model(arch: str):
    """A random 50-letter model of `arch` with sharp, distinct logits (LLaMA with GQA and no biases, or GPT-2),
    and its tokenizer; the engine tests and the cancel-in-a-batch tests share them."""
    if arch == "llama-pointer":  # with a copy head (Pointer): one more cache buffer that joins, leaves and shifts
        model = random_gpt("llama", vocab_size=50, n_head=4, n_kv_head=2, bias=False, seed=5, tie_weights=False,
                           boost=5.0, sharpen=30.0, pointer=True)
        with torch.no_grad():
            model.pointer.k.weight.mul_(300.0)  # sharp copies: the pointer moves the argmax
            model.pointer.gate.zero_()
    elif arch == "llama":
        model = random_gpt("llama", vocab_size=50, n_head=4, n_kv_head=2, bias=False, seed=3, tie_weights=False,
                           boost=5.0, sharpen=30.0)
    else:
        model = random_gpt("gpt2", vocab_size=50, seed=4, tie_weights=False, boost=5.0, sharpen=30.0)
    return model, CharTokenizer(LETTERS)


@pytest.fixture(scope="module", params=["llama", "gpt2", "llama-pointer"])
def model_tok(request):
    return tiny_model(request.param)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


class Slow(torch.nn.Module):
    """Wraps a model so that every call takes a few milliseconds more (timing-safe threaded tests)."""

    def __init__(self, inner, seconds=0.005):
        super().__init__()
        self.inner, self.seconds = inner, seconds
        self.config = inner.config

    def forward(self, idx, *a, **kw):
        time.sleep(self.seconds)
        return self.inner(idx, *a, **kw)


def drive(engine, handles, limit=500):
    """Run scheduler steps by hand (no worker thread) until every handle has finished."""
    for _ in range(limit):
        if all(h.finished for h in handles):
            return
        engine.step()
    raise AssertionError("requests did not finish")


def wait_until(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def tokens(h):
    return [e.token for e in h.events(timeout=5) if e.token is not None]


def mixed_params(i):
    """Different parameters per request: lengths, penalties, stop strings."""
    return [SamplingParams(max_new_tokens=20, **GREEDY),
            SamplingParams(max_new_tokens=7, **GREEDY),
            SamplingParams(max_new_tokens=25, repetition_penalty=1.8, **GREEDY),
            SamplingParams(max_new_tokens=30, frequency_penalty=0.7, presence_penalty=0.3, **GREEDY)][i % 4]


@pytest.mark.parametrize("max_batch", [1, 3, 16])
def test_greedy_staggered_joins_equal_generate_alone(model_tok, max_batch):
    model, tok = model_tok
    ref = [generate(model, tok, [p], mixed_params(i))[0] for i, p in enumerate(PROMPTS)]
    engine = TextEngine(model, tok, max_batch=max_batch)
    handles, most = [], 0
    for i, p in enumerate(PROMPTS):  # request i joins at scheduler step 3 * i (or later, when a slot is free)
        handles.append(engine.submit(p, mixed_params(i)))
        for _ in range(3):
            engine.step()
            most = max(most, engine.stats()["running"])
    drive(engine, handles)
    for h, c in zip(handles, ref):
        text, reason = h.result(timeout=1)
        assert (text, reason) == (c.text, c.finish_reason)
        assert tokens(h) == c.token_ids
        assert h.completion_tokens == len(c.token_ids) and h.prompt_tokens == c.prompt_tokens
    assert most == min(max_batch, 3) if max_batch <= 3 else most > 3  # rows really ran side by side
    if max_batch > 1:
        assert engine.stats()["cache_shifts"] > 0  # a longer prompt joined, and unused columns were dropped


def test_greedy_parity_with_the_worker_thread(llama):
    model, tok = llama
    sp = SamplingParams(max_new_tokens=20, **GREEDY)
    ref = [generate(model, tok, [p], sp)[0].text for p in PROMPTS]
    engine = TextEngine(model, tok, max_batch=4)
    engine.start()
    try:
        handles = []
        for p in PROMPTS:
            handles.append(engine.submit(p, sp))
            next(iter(handles[0].events(timeout=5)))  # let the batch get going before the next one joins
        assert [h.result(timeout=10)[0] for h in handles] == ref
        st = engine.stats()
        assert st["running"] == 0 and st["waiting"] == 0
    finally:
        engine.stop()


def test_seeded_sampling_does_not_depend_on_batch_neighbours():
    model = random_gpt("llama", vocab_size=50, n_head=4, n_kv_head=2, bias=False, seed=5, boost=3.0, sharpen=3.0)
    tok = CharTokenizer(LETTERS)
    sp = SamplingParams(max_new_tokens=24, temperature=1.0, top_k=20, seed=1234)
    alone = generate(model, tok, ["hello"], sp)[0].text

    def run(neighbours, delay):
        engine = TextEngine(model, tok, max_batch=8)
        others = [engine.submit(p, s) for p, s in neighbours]
        for _ in range(delay):
            engine.step()
        h = engine.submit("hello", sp)
        drive(engine, others + [h])
        return h.result()[0]

    busy = [(p, SamplingParams(max_new_tokens=30, temperature=1.3, seed=i)) for i, p in enumerate(PROMPTS)]
    assert run([], 0) == alone
    assert run(busy, 0) == alone
    assert run(busy, 4) == alone
    assert run(busy[:2] + [("abc", SamplingParams(**GREEDY))], 2) == alone
    other_seed = generate(model, tok, ["hello"], dataclasses.replace(sp, seed=99))[0].text
    assert other_seed != alone  # the seed matters, so the checks above can fail


def test_stop_strings_length_context_and_end_of_text(llama):
    model, tok = llama
    free = generate(model, tok, ["abc"], SamplingParams(max_new_tokens=20, **GREEDY))[0].text
    stop = free[6:8]
    assert stop not in free[:7]
    engine = TextEngine(model, tok)
    stopped = engine.submit("abc", SamplingParams(max_new_tokens=20, stop=["zzz", stop], **GREEDY))
    short = engine.submit("abc", SamplingParams(max_new_tokens=5, **GREEDY))
    ctx = engine.submit("a" * 30, SamplingParams(max_new_tokens=20, **GREEDY))  # block_size 32: 3 tokens fit
    drive(engine, [stopped, short, ctx])
    evs = list(stopped.events())
    assert "".join(e.text for e in evs) == free[: free.index(stop)]
    assert all(stop not in e.text for e in evs)
    assert [e.finish_reason for e in evs] == [None] * (len(evs) - 1) + ["stop"]
    assert short.result() == (free[:5], "length") and short.completion_tokens == 5
    assert ctx.result()[1] == "length" and ctx.completion_tokens == 3

    eot_tok = CharTokenizer(LETTERS)
    eot_tok.eot_id = tok.encode(free[4])[0]  # pretend this letter is end-of-text
    engine = TextEngine(model, eot_tok)
    at_eot = engine.submit("abc", SamplingParams(max_new_tokens=20, **GREEDY))
    through = engine.submit("abc", SamplingParams(max_new_tokens=20, stop_at_eot=False, **GREEDY))
    drive(engine, [at_eot, through])
    assert at_eot.result() == (free[: free.index(free[4])], "stop")
    assert list(at_eot.events())[-1].token == eot_tok.eot_id
    assert through.result() == (free, "length")


def test_cancel_frees_the_slot_for_a_waiting_request(llama):
    model, tok = llama
    engine = TextEngine(model, tok, max_batch=1)
    long = engine.submit("abc", SamplingParams(max_new_tokens=30, **GREEDY))
    nxt = engine.submit("q", SamplingParams(max_new_tokens=4, **GREEDY))
    queued = engine.submit("mnop", SamplingParams(max_new_tokens=4, **GREEDY))
    for _ in range(3):
        engine.step()
    assert engine.stats()["running"] == 1 and engine.stats()["waiting"] == 2
    queued.cancel()  # a waiting request leaves the queue at once
    assert queued.result(timeout=0) == ("", "cancelled") and engine.stats()["waiting"] == 1
    long.cancel()
    engine.step()
    evs = list(long.events(timeout=1))
    assert evs[-1] == Event("", None, "cancelled") and len(evs) == 4
    assert long.result()[1] == "cancelled"
    assert engine.stats()["running"] == 1 and engine.stats()["waiting"] == 0  # `nxt` took the slot
    drive(engine, [nxt])
    assert nxt.result() == (generate(model, tok, ["q"], SamplingParams(max_new_tokens=4, **GREEDY))[0].text, "length")
    assert engine.stats()["cancelled"] == 2


def test_cancel_from_another_thread_while_streaming(llama):
    model, tok = llama
    engine = TextEngine(Slow(model), tok, max_batch=1)
    engine.start()
    try:
        long = engine.submit("abc", SamplingParams(max_new_tokens=30, **GREEDY))
        after = engine.submit("q", SamplingParams(max_new_tokens=3, **GREEDY))
        seen = []
        for ev in long.events(timeout=5):
            seen.append(ev)
            if len(seen) == 2:
                threading.Thread(target=long.cancel).start()
        assert seen[-1].finish_reason == "cancelled" and long.completion_tokens < 30
        assert after.result(timeout=5)[1] == "length"
    finally:
        engine.stop()


def test_queue_full_and_validation(llama):
    model, tok = llama
    engine = TextEngine(model, tok, max_batch=1, max_queue=2)
    sp = SamplingParams(max_new_tokens=3, **GREEDY)
    a = engine.submit("abc", sp)
    b = engine.submit([1, 2, 3], sp)
    with pytest.raises(QueueFull):
        engine.submit("q", sp)
    a.cancel()
    engine.submit("q", sp)  # room again
    with pytest.raises(GenloomError, match="exceeds the model's context of 32"):
        engine.submit("a" * 33, sp)
    with pytest.raises(GenloomError, match="empty prompt"):
        engine.submit("", sp)
    with pytest.raises(GenloomError, match="temperature"):
        engine.submit("abc", SamplingParams(temperature=-1))
    with pytest.raises(GenloomError, match="token ids"):
        engine.submit([1, 50], sp)
    assert engine.stats()["waiting"] == 2
    with pytest.raises(TimeoutError):  # nothing runs the engine
        next(b.events(timeout=0.01))
    full = TextEngine(model, tok).submit("a" * 32, sp)  # exactly the context: one token
    assert not full.finished


def test_stats_count_steps_and_tokens(llama):
    model, tok = llama
    engine = TextEngine(model, tok, max_batch=2, name="tiny")
    hs = [engine.submit(p, SamplingParams(max_new_tokens=n, **GREEDY)) for p, n in [("abc", 5), ("q", 9), ("mn", 2)]]
    assert engine.stats()["waiting"] == 3 and engine.stats()["running"] == 0
    engine.step()
    st = engine.stats()
    assert (st["running"], st["waiting"], st["steps"], st["tokens_out"]) == (2, 1, 1, 2)
    drive(engine, hs)
    st = engine.stats()
    assert st["name"] == "tiny" and st["running"] == 0 and st["waiting"] == 0
    assert st["tokens_out"] == 16 == sum(h.completion_tokens for h in hs)
    assert st["prompt_tokens"] == 6 and st["finished"] == 3 and st["submitted"] == 3
    # the last token of a request needs no decode step: 9 tokens of "q" at most 8 steps after the first
    assert st["steps"] < st["tokens_out"]


def test_aevents_under_asyncio(llama):
    model, tok = llama
    sp = SamplingParams(max_new_tokens=12, **GREEDY)
    prompts = ["abc", "q", "mnop"]
    ref = [generate(model, tok, [p], sp)[0].text for p in prompts]
    engine = TextEngine(Slow(model), tok, max_batch=2)

    async def consume(h):
        return [ev async for ev in h.aevents()]

    async def main():
        hs = [engine.submit(p, sp) for p in prompts]
        ticks = 0

        async def ticker():  # the loop stays free while consumers wait
            nonlocal ticks
            while not all(h.finished for h in hs):
                ticks += 1
                await asyncio.sleep(0.001)

        out = await asyncio.wait_for(asyncio.gather(*(consume(h) for h in hs), ticker()), timeout=10)
        return out[:-1], ticks

    engine.start()
    try:
        streams, ticks = asyncio.run(main())
    finally:
        engine.stop()
    assert ["".join(e.text for e in evs) for evs in streams] == ref
    assert all(evs[-1].finish_reason == "length" and len(evs) == 12 for evs in streams)
    assert ticks >= 10  # about 20 steps of 5 ms: the loop kept running while the consumers waited


def test_stop_cancels_pending_and_failures_do_not_hang(llama):
    model, tok = llama
    gate = threading.Event()

    class Gated(torch.nn.Module):
        """Holds the worker in its first forward until stop() has begun: without it a descheduled test thread
        let the worker finish the first two requests and start the third before stop() (a flaky failure)."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, *a, **kw):
            gate.wait(timeout=30)
            return self.inner(*a, **kw)

    engine = TextEngine(Gated(model), tok, max_batch=1)
    hs = [engine.submit("abc", SamplingParams(max_new_tokens=30, **GREEDY)) for _ in range(3)]
    engine.start()
    opener = threading.Thread(target=lambda: (wait_until(lambda: engine._stopping), gate.set()))
    opener.start()
    engine.stop()
    opener.join()
    assert all(h.finished for h in hs) and hs[-1].result() == ("", "cancelled")
    assert hs[0].result()[1] == "cancelled" and len(hs[0].result()[0]) <= 1  # at most the step that was running
    with pytest.raises(GenloomError, match="stopped"):
        engine.submit("abc", SamplingParams())

    class Broken(torch.nn.Module):
        """Raises on decode steps (length 1) or on the prefill of a 4-token prompt."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.config = inner.config

        def forward(self, idx, *a, **kw):
            if idx.size(1) in (1, 4):
                raise RuntimeError("boom")
            return self.inner(idx, *a, **kw)

    engine = TextEngine(Broken(model), tok)
    engine.start()
    try:
        for prompt in ["abc", "mnop"]:  # a failing decode step, a failing prefill
            h = engine.submit(prompt, SamplingParams(max_new_tokens=5, **GREEDY))
            with pytest.raises(RuntimeError, match="boom"):
                h.result(timeout=5)
        ok = engine.submit("abc", SamplingParams(max_new_tokens=1, **GREEDY))  # the engine keeps serving
        assert ok.result(timeout=5)[1] == "length"
        assert engine.stats()["failed"] == 2
    finally:
        engine.stop()


def test_min_new_tokens_equals_generate(llama):
    model, tok = llama
    free = generate(model, tok, ["abc"], SamplingParams(max_new_tokens=20, **GREEDY))[0].text
    eot_tok = CharTokenizer(LETTERS)
    eot_tok.eot_id = tok.encode(free[4])[0]  # pretend this letter is end-of-text: greedy stops within 5 tokens
    stop = free[6:8]
    cases = [("abc", SamplingParams(max_new_tokens=20, **GREEDY)),
             ("abc", SamplingParams(max_new_tokens=20, min_new_tokens=12, **GREEDY)),
             ("abc", SamplingParams(max_new_tokens=20, min_new_tokens=20, **GREEDY)),
             ("abc", SamplingParams(max_new_tokens=20, min_new_tokens=9, stop=[stop], **GREEDY)),
             ("mnop", SamplingParams(max_new_tokens=16, min_new_tokens=10, repetition_penalty=1.5, **GREEDY)),
             ("q", SamplingParams(max_new_tokens=18, min_new_tokens=15, temperature=1.0, seed=5))]
    ref = [generate(model, eot_tok, [p], sp)[0] for p, sp in cases]
    assert ref[0].finish_reason == "stop" and len(ref[0].token_ids) <= 5
    assert len(ref[1].token_ids) >= 12 and len(ref[2].token_ids) == 20
    engine = TextEngine(model, eot_tok, max_batch=4)
    handles = [engine.submit(p, sp) for p, sp in cases]  # four join at the first step, two later
    drive(engine, handles)
    for h, c in zip(handles, ref):
        assert h.result() == (c.text, c.finish_reason)
        got = tokens(h)  # the engine's events carry the end-of-text token too; generate()'s token_ids do not
        assert (got[:-1] if got[-1] == eot_tok.eot_id else got) == c.token_ids


def test_joiners_prefilled_together_equal_generate_alone(model_tok):
    """Requests joining at the same step share one left-padded prefill, also while others run."""
    model, tok = model_tok
    ref = [generate(model, tok, [p], mixed_params(i))[0] for i, p in enumerate(PROMPTS + PROMPTS[::-1])]
    engine = TextEngine(model, tok, max_batch=16)
    first = [engine.submit(p, mixed_params(i)) for i, p in enumerate(PROMPTS)]
    for _ in range(2):
        engine.step()
    later = [engine.submit(p, mixed_params(i + len(PROMPTS))) for i, p in enumerate(PROMPTS[::-1])]
    engine.step()
    assert engine.stats()["running"] == 2 * len(PROMPTS)
    drive(engine, first + later)
    for h, c in zip(first + later, ref):
        assert h.result() == (c.text, c.finish_reason) and tokens(h) == c.token_ids


def test_the_worker_leaves_one_core_to_the_event_loop_and_others_their_threads(llama):
    """decode_threads keeps one core for the server's event loop; the worker's setting is its own: the process
    default that other threads (image routes, moderation) start with stays as it was."""
    from genloom.serve.engine import decode_threads

    assert [decode_threads(n) for n in (1, 2, 4, 16)] == [1, 1, 3, 15]
    model, tok = llama
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, *a, **kw):
            seen.append(torch.get_num_threads())
            return self.inner(*a, **kw)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        engine = TextEngine(Spy(model), tok, max_batch=2)
        assert engine.threads == 1
        engine.start()
        try:
            engine.submit("abc", SamplingParams(max_new_tokens=3, **GREEDY)).result(timeout=30)
        finally:
            engine.stop()
        later = []
        t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert set(seen) == {1} and later == [2] and torch.get_num_threads() == 2
        assert TextEngine(model, tok, threads=2).threads == 2
    finally:
        torch.set_num_threads(before)


def test_a_step_wakes_each_event_loop_once_for_the_whole_batch(llama):
    """The batch's events of one step reach an asyncio loop through one call_soon_threadsafe (not one per row)."""
    model, tok = llama

    class Loop:
        def __init__(self):
            self.calls, self.callbacks = 0, 0

        def call_soon_threadsafe(self, fn, callbacks):
            self.calls += 1
            self.callbacks += len(callbacks)
            fn(callbacks)

    loop, woke = Loop(), []
    engine = TextEngine(model, tok, max_batch=3)
    handles = [engine.submit(p, SamplingParams(max_new_tokens=5, **GREEDY)) for p in PROMPTS[:3]]
    for h in handles:
        h._wakers.append((loop, lambda h=h: woke.append(h.id)))
    steps = 0
    while not all(h.finished for h in handles):
        engine.step()
        steps += 1
    assert loop.calls == steps == 5 and loop.callbacks == len(woke) == 15
