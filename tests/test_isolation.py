"""One request must never hurt another: a failing row fails only its own request, extreme sampling values are
safe, and what the API refuses (NaN, lone surrogates, out-of-range seeds) is a 400 while the others run on."""

from __future__ import annotations

import asyncio
import string
import threading
import time
from pathlib import Path

import pytest
import torch

try:  # openai >= 3 ships its HTTP client as httpx2
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from conftest import random_gpt

from genloom.data.tokenizers import CharTokenizer
from genloom.errors import GenloomError
from genloom.sample import SamplingParams, generate
from genloom.serve import engine as engine_mod
from genloom.serve.app import create_app
from genloom.serve.engine import TextEngine

ROOT = Path(__file__).resolve().parents[1]
CHAT, IMAGE = str(ROOT / "models" / "chat"), str(ROOT / "models" / "fmnist-dcgan")
LETTERS = list(string.ascii_letters[:50])
POISON = "X"  # a prompt holding this letter makes the Poisoned model's prefill fail


@pytest.fixture(scope="module")
def llama():
    model = random_gpt("llama", vocab_size=50, n_head=4, n_kv_head=2, bias=False, seed=3, tie_weights=False,
                       boost=5.0, sharpen=30.0)
    return model, CharTokenizer(LETTERS)


def innocent_params(i: int) -> SamplingParams:
    """Greedy, seeded sampling and penalties: each innocent request's output is fixed by its own parameters."""
    return [SamplingParams(max_new_tokens=12, temperature=0.0),
            SamplingParams(max_new_tokens=10, temperature=0.9, top_p=0.9, seed=11),
            SamplingParams(max_new_tokens=9, temperature=0.7, top_k=5, repetition_penalty=1.5, seed=-3),
            SamplingParams(max_new_tokens=11, temperature=1.3, min_p=0.05, frequency_penalty=0.5, seed=2**62)][i % 4]


INNOCENT = ["abc", "helloWorld", "q", "mnopqrstu"]


def run(engine, handles, limit=200):
    for _ in range(limit):
        if all(h.finished for h in handles):
            return
        engine.step()
    raise AssertionError("requests did not finish")


def tokens(h):
    return [e.token for e in h.events(timeout=5) if e.token is not None]


def solo(model, tok, prompt, sp):
    """The tokens a request gets alone in an engine (the reference every batched request must match)."""
    engine = TextEngine(model, tok, max_batch=1)
    h = engine.submit(prompt, sp)
    run(engine, [h])
    return tokens(h)


def test_a_failing_processor_fails_only_its_own_request(llama, monkeypatch):
    """The poisoned row's processor raises on its third token, mid-batch; the three others finish as alone."""
    model, tok = llama
    want = [solo(model, tok, p, innocent_params(i)) for i, p in enumerate(INNOCENT)]
    build = engine_mod.build_processors
    calls = {"n": 0}

    def poisoned_build(sp):
        procs = build(sp)
        if sp.top_k != 7:
            return procs

        def boom(counts, logits):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
            return logits

        return [boom, *procs]

    monkeypatch.setattr(engine_mod, "build_processors", poisoned_build)
    engine = TextEngine(model, tok, max_batch=5)
    hs = [engine.submit(p, innocent_params(i)) for i, p in enumerate(INNOCENT[:2])]
    bad = engine.submit("xyz", SamplingParams(max_new_tokens=12, temperature=1.0, top_k=7, seed=1))
    engine.step()  # the poisoned request runs in the batch when the others join
    hs += [engine.submit(p, innocent_params(i + 2)) for i, p in enumerate(INNOCENT[2:])]
    run(engine, hs + [bad])
    with pytest.raises(RuntimeError, match="inf"):
        bad.result()
    assert [tokens(h) for h in hs] == want
    assert engine.stats()["failed"] == 1 and engine.stats()["finished"] == 4


class Poisoned(torch.nn.Module):
    """Raises on a prefill whose prompt holds the POISON token, or on a decode step past position `past`."""

    def __init__(self, inner, poison: int, past: int = 10**9):
        super().__init__()
        self.inner, self.config, self.poison, self.past = inner, inner.config, poison, past

    def forward(self, idx, *a, cache=None, pos=None, **kw):
        if idx.size(1) > 1 and bool((idx == self.poison).any()):
            raise RuntimeError("poisoned prefill")
        here = pos.max() if pos is not None else cache.length
        if idx.size(1) == 1 and int(here) >= self.past:
            raise RuntimeError("poisoned decode")
        return self.inner(idx, *a, cache=cache, pos=pos, **kw)


def test_a_failing_prefill_fails_only_its_own_request(llama):
    model, tok = llama
    want = [solo(model, tok, p, innocent_params(i)) for i, p in enumerate(INNOCENT)]
    engine = TextEngine(Poisoned(model, tok.encode(POISON)[0]), tok, max_batch=8)
    early = engine.submit(INNOCENT[0], innocent_params(0))
    engine.step()  # one request already running when the poisoned prompt joins the others
    hs = [engine.submit(p, innocent_params(i + 1)) for i, p in enumerate(INNOCENT[1:])]
    bad = engine.submit("abc" + POISON, SamplingParams(max_new_tokens=5, temperature=0.0))
    hs.insert(2, engine.submit(INNOCENT[2] + "x", innocent_params(2)))  # a joiner behind the poisoned one
    run(engine, [early, *hs, bad])
    with pytest.raises(RuntimeError, match="poisoned prefill"):
        bad.result()
    assert tokens(early) == want[0] and tokens(hs[0]) == want[1] and tokens(hs[1]) == want[2]
    assert tokens(hs[3]) == want[3] and tokens(hs[2]) == solo(model, tok, INNOCENT[2] + "x", innocent_params(2))
    assert engine.stats()["failed"] == 1


def test_a_failing_decode_step_fails_only_its_own_request(llama):
    """The long prompt's row fails on its decode step at position 24; the short rows never get that far."""
    model, tok = llama
    want = [solo(model, tok, p, innocent_params(i)) for i, p in enumerate(INNOCENT)]
    engine = TextEngine(Poisoned(model, -1, past=24), tok, max_batch=8)
    bad = engine.submit("abcdefghijklmnopqrst", SamplingParams(max_new_tokens=10, temperature=0.0))
    hs = [engine.submit(p, innocent_params(i)) for i, p in enumerate(INNOCENT)]
    run(engine, hs + [bad])
    got = []
    with pytest.raises(RuntimeError, match="poisoned decode"):
        for e in bad.events(timeout=5):
            got.append(e.token)
    assert len(got) == 5  # the prefill's token, then decode steps at positions 20..23; the one at 24 failed
    assert [tokens(h) for h in hs] == want
    assert engine.stats()["failed"] == 1


def test_a_failing_row_under_the_worker_thread_leaves_the_others_running(llama, monkeypatch):
    """The same through the worker thread, which used to fail the whole batch on any error."""
    model, tok = llama
    want = [solo(model, tok, p, innocent_params(i)) for i, p in enumerate(INNOCENT)]
    engine = TextEngine(Poisoned(model, tok.encode(POISON)[0], past=24), tok, max_batch=8)
    engine.start()
    try:
        bad = [engine.submit("abcdefghijklmnopqrst", SamplingParams(max_new_tokens=10, temperature=0.0)),
               engine.submit("ab" + POISON, SamplingParams(max_new_tokens=3, temperature=0.0))]
        hs = [engine.submit(p, innocent_params(i)) for i, p in enumerate(INNOCENT)]
        assert [tokens(h) for h in hs] == want
        for h in bad:
            with pytest.raises(RuntimeError, match="poisoned"):
                h.result(timeout=30)
    finally:
        engine.stop()


# ---- extreme sampling values: no inf/nan, whatever the request asks ----


@pytest.mark.parametrize("extreme", [dict(temperature=1e-40), dict(temperature=1e-300, top_p=0.5),
                                     dict(temperature=1.0, top_p=1e-46), dict(temperature=2.0, top_p=5e-324),
                                     dict(temperature=1e-6, top_k=3)])
def test_tiny_temperature_and_top_p_decode_the_likeliest_token(llama, extreme):
    """temperature -> 0 and top_p -> 0 both mean the likeliest token: they equal greedy decoding, in the
    library and in the engine, instead of a distribution of NaNs."""
    model, tok = llama
    greedy = generate(model, tok, ["abc"], SamplingParams(max_new_tokens=8, temperature=0.0))[0].text
    sp = SamplingParams(max_new_tokens=8, seed=5, **extreme)
    assert generate(model, tok, ["abc"], sp)[0].text == greedy
    engine = TextEngine(model, tok, max_batch=2)
    h = engine.submit("abc", sp)
    run(engine, [h])
    assert h.result()[0] == greedy


@pytest.mark.parametrize("seed", [-(2**63), 2**63 - 1, 2**64 - 1])
def test_seeds_at_the_ends_of_the_64_bit_range(llama, seed):
    model, tok = llama
    engine = TextEngine(model, tok, max_batch=2)
    h = engine.submit("abc", SamplingParams(max_new_tokens=4, seed=seed))
    run(engine, [h])
    assert h.result()[1] == "length"


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1])
def test_seeds_outside_the_range_are_refused_up_front(llama, seed):
    model, tok = llama
    with pytest.raises(GenloomError, match="seed"):
        TextEngine(model, tok).submit("abc", SamplingParams(max_new_tokens=4, seed=seed))


@pytest.mark.parametrize("extreme", [dict(repetition_penalty=5e-324), dict(repetition_penalty=5e-324, temperature=0.3),
                                     dict(repetition_penalty=1e300, frequency_penalty=2.0, top_p=1e-300)])
def test_extreme_penalties_sample_without_nan(llama, extreme):
    """A repetition penalty of 5e-324 is 0 in float32 (logits / 0 = inf): still a token, in generate and engine."""
    model, tok = llama
    sp = SamplingParams(max_new_tokens=6, seed=1, **extreme)
    assert generate(model, tok, ["abcabc"], sp)[0].finish_reason == "length"
    engine = TextEngine(model, tok, max_batch=2)
    h = engine.submit("abcabc", sp)
    run(engine, [h])
    assert h.result()[1] == "length"


# ---- through the API: refused at the protocol, isolated, off the event loop ----


class InProcess:
    """The app with its lifespan on an event loop in a thread, and an httpx client to it: the test thread sends
    requests, several at once if it likes, and sees the loop stall if something blocks it."""

    def __init__(self, app):
        self.app, self.loop = app, asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=60)
        self.life = app.router.lifespan_context(app)
        self.submit(self.life.__aenter__()).result(60)
        deadline = time.monotonic() + 120
        while app.state.loading:
            assert time.monotonic() < deadline, "models did not load"
            time.sleep(0.05)
        assert not app.state.load_errors, app.state.load_errors

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def send(self, method, url, **kw):
        return self.submit(self.client.request(method, url, **kw)).result(60)

    def post_raw(self, url, text: str):
        """A body as written: NaN, Infinity and lone surrogates are what json.dumps would not send."""
        return self.send("POST", url, content=text.encode("utf-8", "surrogatepass"),
                         headers={"content-type": "application/json"})

    def close(self):
        self.submit(self.life.__aexit__(None, None, None)).result(60)
        self.submit(self.client.aclose()).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    app = create_app([CHAT, IMAGE], max_batch=4, max_queue=8, max_tokens=16, max_body_bytes=8 << 20,
                     data_dir=str(tmp_path_factory.mktemp("isolation")), jobs=False)
    s = InProcess(app)
    yield s
    s.close()


def error_of(r, status: int, param: str | None = "") -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    if param != "":
        assert err["param"] == param, err
    return err


TEXT = {"model": "chat", "prompt": "Hello", "max_tokens": 4}
CHAT_BODY = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
IMG = {"model": "fmnist-dcgan", "n": 1}


@pytest.mark.parametrize("path, raw, param", [
    ("/v1/images/generations", '{"model": "fmnist-dcgan", "guidance": NaN}', "guidance"),
    ("/v1/completions", '{"model": "chat", "prompt": "a", "temperature": Infinity}', "temperature"),
    ("/v1/completions", '{"model": "chat", "prompt": "a", "top_p": 1e999}', "top_p"),
    ("/v1/chat/completions", ('{"model": "chat", "messages": [{"role": "user", "content": "Hi"}], '
                              '"logit_bias": {"5": -Infinity}}'), "logit_bias.5"),
    ("/v1/completions", '{"model": "chat", "prompt": "\\ud800", "max_tokens": 2}', "prompt"),
    ("/v1/chat/completions", '{"model": "chat", "messages": [{"role": "user", "content": "a\\udfffb"}]}',
     "messages[0].content"),
    ("/v1/images/generations", '{"model": "fmnist-dcgan", "prompt": "\\ud800"}', "prompt"),
    ("/v1/completions", '{"model": "chat", "prompt": "a", "\\ud800": 1}', None),
])
def test_non_finite_numbers_and_lone_surrogates_are_400s(api, path, raw, param):
    """Python's json reads NaN, Infinity, 1e999 and "\\ud800"; none can be stored or written back: 400, not 500."""
    err = error_of(api.post_raw(path, raw), 400, param)
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {**TEXT, "seed": 2**64}, "seed"),
    ("/v1/completions", {**TEXT, "seed": -(2**63) - 1}, "seed"),
    ("/v1/completions", {**TEXT, "seed": False}, "seed"),
    ("/v1/chat/completions", {**CHAT_BODY, "seed": 2**63}, "seed"),
    ("/v1/images/generations", {**IMG, "seed": 2**64}, "seed"),
    ("/v1/images/generations", {**IMG, "seed": False}, "seed"),
    ("/v1/images/generations", {**IMG, "steps": "5"}, "steps"),
    ("/v1/completions", {**TEXT, "temperature": 2.5}, "temperature"),
    ("/v1/completions", {**TEXT, "suffix": "x"}, "suffix"),
    ("/v1/chat/completions", {**CHAT_BODY, "response_format": {}}, "response_format.type"),
    ("/v1/chat/completions", {**CHAT_BODY, "response_format": {"type": "json_object"}}, "response_format.type"),
    ("/v1/embeddings", {"input": ""}, "input"),
    ("/v1/embeddings", {"input": []}, "input"),
])
def test_out_of_range_and_wrongly_typed_fields_are_400s(api, path, body, param):
    error_of(api.send("POST", path, json=body), 400, param)


@pytest.mark.parametrize("seed", [-(2**63), 2**63 - 1])
def test_seeds_at_the_ends_of_the_range_are_served(api, seed):
    assert api.send("POST", "/v1/completions", json={**TEXT, "seed": seed}).status_code == 200
    assert api.send("POST", "/v1/images/generations", json={**IMG, "n": 2, "seed": seed}).status_code == 200


def test_a_tiny_temperature_or_top_p_is_greedy_not_a_500(api):
    greedy = api.send("POST", "/v1/completions", json={**TEXT, "temperature": 0}).json()["choices"][0]["text"]
    for extreme in ({"temperature": 1e-40}, {"top_p": 1e-46}, {"temperature": 1e-300, "top_p": 5e-324}):
        r = api.send("POST", "/v1/completions", json={**TEXT, **extreme, "seed": 1})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == greedy, (extreme, r.text)


def test_image_models_are_found_by_id_as_listed(api):
    listed = {m["id"]: m for m in api.send("GET", "/v1/models").json()["data"]}
    one = api.send("GET", "/v1/models/fmnist-dcgan")
    assert one.status_code == 200 and one.json()["genloom"] == listed["fmnist-dcgan"]["genloom"]


def test_history_survives_odd_stored_values(api):
    """A row stored by an older server with NaN or a lone surrogate made the whole history page a 500."""
    db = api.app.state.db
    db.log_request(route="/v1/images/generations", model="fmnist-dcgan", params={"guidance": float("nan"),
                   "prompt": "a\ud800", "scale": [float("inf"), 1.5]}, output={"images": []})
    r = api.send("GET", "/ui/api/history")
    assert r.status_code == 200, r.text
    row = next(x for x in r.json()["data"] if x["params"].get("prompt", "").startswith("a"))
    assert row["params"]["guidance"] is None and row["params"]["scale"] == [None, 1.5]


def test_a_failed_image_request_leaves_no_file(api, monkeypatch):
    """The PNGs and their history row are one write: a failing row write (PostgreSQL refusing a value, a full
    disk) removes the PNGs it had written."""
    db = api.app.state.db
    before = set((db.data_dir / "images").glob("*.png"))

    def broken(**kw):
        raise RuntimeError("database is gone")

    monkeypatch.setattr(db, "log_request", broken)
    r = api.send("POST", "/v1/images/generations", json={**IMG, "n": 2, "seed": 3})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert set((db.data_dir / "images").glob("*.png")) == before


def test_health_answers_while_a_long_prompt_is_tokenised(api, monkeypatch):
    """Tokenising a multi-MB prompt runs in a worker thread: the event loop keeps answering meanwhile. The
    tokenizer here also waits for the test's signal, so that a tokenizer run on the loop would stall it."""
    tok = api.app.state.models["chat"].tokenizer
    real, started, release = tok.encode, threading.Event(), threading.Event()

    def encode(text):
        started.set()
        ids = real(text)
        release.wait(10)
        return ids

    monkeypatch.setattr(tok, "encode", encode)
    prompt = "And God said, Let there be light: and there was light. " * 40_000  # 2.2 MB
    big = api.submit(api.client.post("/v1/completions", json={**TEXT, "prompt": prompt}))
    try:
        assert started.wait(30)
        t0 = time.perf_counter()
        health = api.send("GET", "/health")
        waited = time.perf_counter() - t0
    finally:
        release.set()
    # a tokenizer on the event loop would hold /health until release.wait(10) ran out: 10 s, not a busy machine's 1
    assert health.status_code == 200 and waited < 5, f"/health took {waited:.2f} s"
    error_of(big.result(60), 400, "prompt")  # far beyond the context: refused once tokenised
