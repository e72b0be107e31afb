"""The engine in its own process (`genloom serve --engine process`): the same outputs as the engine in a thread,
the queue bound, cancelling, stopping, a child that dies, and the server routes on top of it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from genloom.checkpoints import load_model
from genloom.errors import GenloomError
from genloom.safety.watermark import Secret, Watermarks
from genloom.sample import SamplingParams
from genloom.serve.engine import QueueFull, TextEngine
from genloom.serve.engine_process import EngineGone, EngineProcess

ROOT = Path(__file__).resolve().parents[1]
CHAT, CHAT_KB = ROOT / "models" / "chat", ROOT / "models" / "chat-kb"
KEY = Secret(bytes(range(32)))


def mixed_requests() -> list[tuple[str, SamplingParams]]:
    """Greedy, seeded sampling, a stop string, min_tokens and a penalty: every path of the engine's sampling."""
    sps = [SamplingParams(max_new_tokens=24, temperature=0.0),
           SamplingParams(max_new_tokens=20, temperature=0.9, top_p=0.9, seed=11),
           SamplingParams(max_new_tokens=30, temperature=0.0, stop=[".", "?"]),
           SamplingParams(max_new_tokens=16, min_new_tokens=16, temperature=0.0),
           SamplingParams(max_new_tokens=18, temperature=0.7, repetition_penalty=1.3, seed=3)]
    prompts = ["User: what is your name?\nBot:", "User: tell me a joke\nBot:", "hello there", "User: hi\nBot:",
               "User: do you like music?\nBot:", "The weather today", "User: where do you live?\nBot:"]
    return [(p, sps[i % len(sps)]) for i, p in enumerate(prompts)]


def outputs(engine, requests, stagger: bool):
    """Each request's (text, finish_reason, stop_reason, completion_tokens); with `stagger`, half the requests join
    while the first half is decoding."""
    half = len(requests) // 2 if stagger else len(requests)
    hs = [engine.submit(p, sp) for p, sp in requests[:half]]
    if stagger:
        next(hs[0].events(timeout=60))
        hs += [engine.submit(p, sp) for p, sp in requests[half:]]
    out = []
    for h in hs:
        evs = list(h.events(timeout=60))
        out.append(("".join(e.text for e in evs), evs[-1].finish_reason, evs[-1].stop_reason, h.completion_tokens))
    return out


@pytest.mark.parametrize("path", [CHAT, CHAT_KB], ids=["chat", "chat-kb-pointer"])
def test_same_outputs_as_the_engine_in_a_thread(path):
    loaded = load_model(path)
    marks = Watermarks(KEY)
    reqs = mixed_requests()
    here = TextEngine(loaded.model, loaded.tokenizer, max_batch=4, name="here", watermarks=marks)
    here.start()
    there = EngineProcess(path, loaded.tokenizer, loaded.config, max_batch=4, name="there", watermarks=marks)
    try:
        for stagger in (False, True):
            want, got = outputs(here, reqs, stagger), outputs(there, reqs, stagger)
            assert got == want
        assert any(f == "length" for _, f, _, _ in want) and any(f == "stop" for _, f, _, _ in want)
        stats = there.stats()
        assert stats["finished"] == 2 * len(reqs) and stats["tokens_out"] == 2 * sum(n for *_, n in want)
        assert stats["alive"] and stats["running"] == 0
        assert KEY.raw.hex() not in Path(f"/proc/{there.pid}/cmdline").read_bytes().decode(errors="replace")
    finally:
        here.stop()
        there.stop()
    assert there._proc.returncode is not None  # the child has exited and been reaped


@pytest.fixture(scope="module")
def small():
    """One request decoding, one waiting: max_batch 1, max_queue 1."""
    loaded = load_model(CHAT)
    eng = EngineProcess(CHAT, loaded.tokenizer, loaded.config, max_batch=1, max_queue=1, name="small")
    yield eng
    eng.stop()


LONG = SamplingParams(max_new_tokens=120, min_new_tokens=120, temperature=0.0)


def test_queue_bound_cancel_and_bad_requests(small):
    a = small.submit("User: hi\nBot:", LONG)
    b = small.submit("User: hello\nBot:", LONG)
    with pytest.raises(QueueFull):
        small.submit("User: one more\nBot:", LONG)
    next(a.events(timeout=60))  # a is decoding, b waits
    b.cancel()  # a waiting request leaves at once
    assert [e.finish_reason for e in b.events(timeout=30)][-1] == "cancelled"
    a.cancel()  # a running one at the next step
    evs = list(a.events(timeout=30))
    assert evs[-1].finish_reason == "cancelled" and a.completion_tokens < 120
    c = small.submit("User: again\nBot:", SamplingParams(max_new_tokens=5, temperature=0.0))
    assert c.result(timeout=60)[1] in ("length", "stop")
    for prompt, msg in (("", "empty prompt"), ([5, 10**6], "token ids"), ("x" * 5000, "exceeds the model's context")):
        with pytest.raises(GenloomError, match=msg):
            small.submit(prompt, SamplingParams(max_new_tokens=4))
    with pytest.raises(GenloomError, match="temperature"):
        small.submit("hi", SamplingParams(temperature=-1.0))


def test_a_child_that_dies_fails_its_requests_and_refuses_new_ones():
    loaded = load_model(CHAT)
    eng = EngineProcess(CHAT, loaded.tokenizer, loaded.config, max_batch=2, name="doomed")
    try:
        h = eng.submit("User: hi\nBot:", LONG)
        next(h.events(timeout=60))
        os.kill(eng.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="exited"):
            list(h.events(timeout=30))
        deadline = time.monotonic() + 10
        while eng.stats()["alive"] and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(EngineGone, match="exited"):
            eng.submit("User: hi\nBot:", LONG)
    finally:
        eng.stop()


def test_stop_cancels_what_is_pending_and_a_bad_model_is_one_error(tmp_path):
    loaded = load_model(CHAT)
    eng = EngineProcess(CHAT, loaded.tokenizer, loaded.config, max_batch=1, max_queue=4, name="stopping")
    hs = [eng.submit(f"User: q{i}\nBot:", LONG) for i in range(3)]
    next(hs[0].events(timeout=60))
    eng.stop()
    assert [list(h.events(timeout=5))[-1].finish_reason for h in hs] == ["cancelled"] * 3
    assert eng._proc.returncode == 0
    with pytest.raises(GenloomError, match="stopped"):
        eng.submit("hi", LONG)
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    with pytest.raises(GenloomError) as e:
        EngineProcess(bad, loaded.tokenizer, loaded.config, name="bad")
    assert "Traceback" not in str(e.value) and str(e.value).strip()


def test_server_streams_the_same_through_the_engine_process_and_503s_when_it_is_gone():
    from test_api_text import Server, httpx

    from genloom.serve.app import create_app

    body = {"model": "chat", "messages": [{"role": "user", "content": "what do you like?"}], "temperature": 0,
            "max_tokens": 24, "stream": True}

    def stream(url):
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            return [line for line in r.iter_lines() if line.startswith("data:")]

    texts = {}
    for engine in ("thread", "process"):
        s = Server(create_app([str(CHAT)], max_batch=4, max_queue=4, jobs=False, engine=engine))
        try:
            chunks = stream(s.url)
            texts[engine] = [c.split('"content":', 1)[-1].split("}", 1)[0] for c in chunks if '"content"' in c]
            eng = s.engine("chat")
            assert isinstance(eng, EngineProcess) == (engine == "process")
            if engine == "process":
                os.kill(eng.pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while eng.stats()["alive"] and time.monotonic() < deadline:
                    time.sleep(0.02)
                r = httpx.post(f"{s.url}/v1/chat/completions", json={**body, "stream": False}, timeout=30)
                assert r.status_code == 503 and r.json()["error"]["code"] == "engine_gone"
        finally:
            s.close()
    assert texts["process"] == texts["thread"] and len(texts["thread"]) > 3
    with pytest.raises(GenloomError, match="unknown engine 'fork'; choose one of thread, process"):
        create_app([str(CHAT)], engine="fork")


def test_cli_names_the_engine_choices(run_main):
    from conftest import assert_one_line_error

    line = assert_one_line_error(*run_main("serve", "--model", str(CHAT), "--engine", "fork"))
    assert "process" in line and "thread" in line


class Sink:
    """What the child engine sends, decoded (a stand-in for the socket)."""

    def __init__(self):
        self.messages = []

    def send_bytes(self, data: bytes) -> None:
        import json

        self.messages.append(json.loads(data))


def test_the_child_engine_sends_a_failure_at_once_and_the_others_events_per_step():
    """In-process: the child's engine with a model whose prefill fails on one letter. A failed request alone in the
    engine is sent without waiting for a next step (there is none); beside others, only it fails."""
    import string

    from conftest import random_gpt
    from test_isolation import POISON, Poisoned

    from genloom.data.tokenizers import CharTokenizer
    from genloom.serve.engine_process import _ChildEngine

    tok = CharTokenizer(list(string.ascii_letters[:50]))
    model = random_gpt("llama", vocab_size=50, n_head=4, n_kv_head=2, bias=False, seed=3, tie_weights=False,
                       boost=5.0, sharpen=30.0)
    sink = Sink()
    eng = _ChildEngine(Poisoned(model, tok.encode(POISON)[0]), tok, max_batch=4, conn=sink)
    eng.submit("ab" + POISON, SamplingParams(max_new_tokens=4, temperature=0.0), rid="bad-1")
    eng.step()
    assert [m.get("f") for m in sink.messages] == [[["bad-1", "generation failed: poisoned prefill"]]]
    assert eng.by_id == {}
    sink.messages.clear()
    want = TextEngine(model, tok, max_batch=4)
    ref = want.submit("abc", SamplingParams(max_new_tokens=6, temperature=0.0))
    while not ref.finished:
        want.step()
    eng.submit("abc", SamplingParams(max_new_tokens=6, temperature=0.0), rid="ok-1")
    eng.submit("xy" + POISON, SamplingParams(max_new_tokens=6, temperature=0.0), rid="bad-2")
    for _ in range(10):
        eng.step()
    events = [e for m in sink.messages for e in m.get("e", [])]
    fails = [f for m in sink.messages for f in m.get("f", [])]
    assert [e[2] for e in events if e[0] == "ok-1"] == [e.token for e in ref.events(timeout=1)]
    assert [f[0] for f in fails] == ["bad-2"] and not any(e[0] == "bad-2" for e in events)
    assert all("s" in m for m in sink.messages) and eng.by_id == {}


def test_the_child_engine_sends_the_failure_of_a_step_that_raised_to_its_worker():
    """A lone row whose decode step fails: the step raises to the worker loop, which fails the row after the step;
    with no next step the failure must still reach the parent."""
    import string

    from conftest import random_gpt
    from test_isolation import Poisoned

    from genloom.data.tokenizers import CharTokenizer
    from genloom.serve.engine_process import _ChildEngine

    tok = CharTokenizer(list(string.ascii_letters[:50]))
    model = random_gpt("llama", vocab_size=50, n_head=4, n_kv_head=2, bias=False, seed=3, tie_weights=False,
                       boost=5.0, sharpen=30.0)
    sink = Sink()
    eng = _ChildEngine(Poisoned(model, -1, past=24), tok, max_batch=4, conn=sink)
    eng.start()
    try:
        eng.submit("abcdefghijklmnopqrst", SamplingParams(max_new_tokens=10, temperature=0.0), rid="lone")
        deadline = time.monotonic() + 30
        while not any(m.get("f") for m in sink.messages) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        eng.stop()
    fails = [f for m in sink.messages for f in m.get("f", [])]
    assert len(fails) == 1 and fails[0][0] == "lone" and "poisoned decode" in fails[0][1]
