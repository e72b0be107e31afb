"""The OpenAI-compatible HTTP API: a real uvicorn server on loopback, driven by the official openai client."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

# in the test extra: a missing one fails here, never skips (pip install -e ".[test]")
import openai
import uvicorn
try:  # openai >= 3 ships its HTTP client as httpx2
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from genloom.sample import SamplingParams, generate  # noqa: E402
from genloom.serve.app import create_app  # noqa: E402
from genloom.serve.models import DEFAULT_CHAT_TEMPLATE, ChatTemplate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHAT, KJV = str(ROOT / "models" / "chat"), str(ROOT / "models" / "kjv")
LIMITS = dict(max_tokens=64, max_n=4)


class Server:
    """uvicorn in a daemon thread on a free loopback port; the app object stays reachable for white-box checks."""

    def __init__(self, app, wait_ready: bool = True):
        self.app = app
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        while wait_ready and httpx.get(f"{self.url}/health").status_code != 200:  # models load in the background
            if time.monotonic() > deadline:
                raise RuntimeError("the test server's models did not load")
            time.sleep(0.05)

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def engine(self, name):
        return self.app.state.models[name].engine

    def model(self, name):
        return self.app.state.models[name].loaded


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module")
def server():
    s = Server(create_app([CHAT, KJV], max_batch=4, max_queue=16, **LIMITS))
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def raw(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def library_greedy(server, name, prompt, max_tokens, stop=()):
    """What genloom.sample.generate gives for the same prompt, with the server's watermark (on by default): the
    server must agree with the library."""
    m = server.model(name)
    sp = SamplingParams(max_new_tokens=max_tokens, temperature=0.0, stop=list(stop))
    marks = server.app.state.watermarks.processors(m.config.vocab_size)
    return generate(m.model, m.tokenizer, [prompt], sp, marks)[0]


# ---- happy paths ----


def test_health_and_request_ids(raw):
    r = raw.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "models": ["chat", "kjv"]}
    assert len(r.headers["x-request-id"]) >= 16
    assert raw.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert raw.get("/health", headers={"X-Request-ID": "bad id\x01"}).headers["x-request-id"] != "bad id\x01"


def test_models_list(client, raw):
    models = client.models.list()
    assert sorted(m.id for m in models.data) == ["chat", "kjv"]
    assert {m.owned_by for m in models.data} == {"genloom"}
    assert raw.get("/v1/models/kjv").json()["max_model_len"] == 256


def test_completion_matches_library_with_usage(client, server):
    prompt = "In the beginning"
    out = client.completions.create(model="kjv", prompt=prompt, max_tokens=12, temperature=0)
    ref = library_greedy(server, "kjv", prompt, 12)
    assert out.object == "text_completion" and out.model == "kjv" and out.id.startswith("cmpl-")
    assert len(out.choices) == 1
    assert out.choices[0].text == ref.text and ref.text
    assert out.choices[0].finish_reason == ref.finish_reason
    tok = server.model("kjv").tokenizer
    assert out.usage.prompt_tokens == len(tok.encode(prompt))
    assert out.usage.completion_tokens == len(ref.token_ids)
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_prompt_list_and_echo(client, server):
    out = client.completions.create(model="kjv", prompt=["And God said", "The LORD"], max_tokens=6, temperature=0,
                                    echo=True)
    assert [c.index for c in out.choices] == [0, 1]
    for c, p in zip(out.choices, ["And God said", "The LORD"]):
        assert c.text == p + library_greedy(server, "kjv", p, 6).text
    tok = server.model("kjv").tokenizer
    assert out.usage.prompt_tokens == len(tok.encode("And God said")) + len(tok.encode("The LORD"))


def test_seed_determinism(client):
    def sample(seed):
        out = client.completions.create(model="kjv", prompt="And", max_tokens=16, temperature=1.0, seed=seed)
        return out.choices[0].text

    a = sample(7)
    assert sample(7) == a
    assert any(sample(s) != a for s in (8, 9, 10))


def test_n2_gives_seed_and_seed_plus_one(client):
    two = client.completions.create(model="kjv", prompt="And", max_tokens=10, temperature=1.0, seed=3, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    for j, choice in enumerate(two.choices):
        one = client.completions.create(model="kjv", prompt="And", max_tokens=10, temperature=1.0, seed=3 + j)
        assert choice.text == one.choices[0].text
    assert two.usage.completion_tokens > 10  # both choices counted (each stops at 10 or before on a stop)


def test_stop_strings(client):
    base = client.completions.create(model="kjv", prompt="And God said", max_tokens=24, temperature=0)
    text = base.choices[0].text
    words = [w for w in text.split() if len(w) >= 3]
    assert words, f"the greedy text gives no word to stop on: {text!r}"
    stop = words[len(words) // 2]
    cut = client.completions.create(model="kjv", prompt="And God said", max_tokens=24, temperature=0,
                                    stop=[stop, "zzzz-never"])
    assert cut.choices[0].text == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    single = client.completions.create(model="kjv", prompt="And God said", max_tokens=24, temperature=0, stop=stop)
    assert single.choices[0].text == cut.choices[0].text


def test_streaming_completion_concatenates_to_plain(client):
    plain = client.completions.create(model="kjv", prompt="In the beginning", max_tokens=16, temperature=0)
    chunks = list(client.completions.create(model="kjv", prompt="In the beginning", max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) > 2
    assert "".join(texts) == plain.choices[0].text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_chat_template_applied(client, server):
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi"}, {"role": "user", "content": "How are you?"}]
    out = client.chat.completions.create(model="chat", messages=messages, max_tokens=20, temperature=0)
    prompt = "Be kind.\nUser: Hello\nBot: Hi\nUser: How are you?\nBot:"
    ref = library_greedy(server, "chat", prompt, 20, stop=["\nUser:"])
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == ref.text.lstrip() and ref.text.strip()
    assert out.choices[0].finish_reason == ref.finish_reason
    assert out.usage.prompt_tokens == len(server.model("chat").tokenizer.encode(prompt))


def test_streaming_chat_concatenates_to_plain(client, raw):
    msgs = [{"role": "user", "content": "What is your name?"}]
    plain = client.chat.completions.create(model="chat", messages=msgs, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model="chat", messages=msgs, max_tokens=20, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content == plain.choices[0].message.content and content
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    # the wire format itself: data: lines, then [DONE]
    body = raw.post("/v1/chat/completions", json={"model": "chat", "messages": msgs, "max_tokens": 3,
                                                  "stream": True}).text
    frames = [f for f in body.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames) and frames[-1] == "data: [DONE]"
    assert json.loads(frames[0][6:])["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_min_tokens_extra_body(client, raw, server):
    msgs = [{"role": "user", "content": "What is your name?"}]
    natural = client.chat.completions.create(model="chat", messages=msgs, max_tokens=40, temperature=0)
    assert natural.choices[0].finish_reason == "stop" and natural.usage.completion_tokens < 30
    forced = client.chat.completions.create(model="chat", messages=msgs, max_tokens=40, temperature=0,
                                            extra_body={"min_tokens": 30})
    assert forced.usage.completion_tokens >= 30
    prompt = server.app.state.models["chat"].template.render([("user", "What is your name?")])
    m = server.model("chat")
    ref = generate(m.model, m.tokenizer, [prompt], SamplingParams(max_new_tokens=40, min_new_tokens=30,
                                                                  temperature=0.0, stop=["\nUser:"]),
                   server.app.state.watermarks.processors(m.config.vocab_size))[0]
    assert forced.choices[0].message.content == ref.text.lstrip()
    assert forced.choices[0].finish_reason == ref.finish_reason
    fixed = client.completions.create(model="kjv", prompt="And", max_tokens=12, temperature=0,
                                      extra_body={"min_tokens": 12}, stop=["\n", " "])
    assert fixed.usage.completion_tokens == 12  # min_tokens = max_tokens: a fixed length (the 12th may still stop)
    same = client.completions.create(model="kjv", prompt="And", max_tokens=12, temperature=0,
                                     extra_body={"min_tokens": 0})
    assert same.choices[0].text == client.completions.create(model="kjv", prompt="And", max_tokens=12,
                                                             temperature=0).choices[0].text
    for body in [{**OK_CHAT, "min_tokens": 3}, {**OK_COMPLETION, "min_tokens": -1},
                 {**OK_COMPLETION, "min_tokens": "4"}, {**OK_CHAT, "max_tokens": None, "min_tokens": 10_000}]:
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        _error(raw.post(path, json=body), 400, param="min_tokens")
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chat", messages=msgs, max_tokens=5, extra_body={"min_tokens": 6})
    assert e.value.status_code == 400 and e.value.body["param"] == "min_tokens"


def test_vllm_sampling_extensions_extra_body(client, server):
    """top_k, min_p and repetition_penalty (vLLM's names, sent by the openai client in extra_body) reach the sampler."""
    prompt = "And God said"
    greedy = client.completions.create(model="kjv", prompt=prompt, max_tokens=16, temperature=0).choices[0].text
    m = server.model("kjv")
    procs = server.app.state.watermarks.processors
    for seed in (1, 2):  # top_k 1 leaves only the likeliest token: greedy at any seed
        out = client.completions.create(model="kjv", prompt=prompt, max_tokens=16, temperature=1.0, seed=seed,
                                        extra_body={"top_k": 1})
        assert out.choices[0].text == greedy
        # min_p 0.999 leaves the likeliest token and any within 0.1% of it (a near-tie, which the watermark's bias
        # can make): the library with the same seed and processors says what the server must answer
        out = client.completions.create(model="kjv", prompt=prompt, max_tokens=16, temperature=1.0, seed=seed,
                                        extra_body={"min_p": 0.999})
        sp = SamplingParams(max_new_tokens=16, temperature=1.0, min_p=0.999, seed=seed)
        assert out.choices[0].text == generate(m.model, m.tokenizer, [prompt], sp, procs(m.config.vocab_size))[0].text
        loose = SamplingParams(max_new_tokens=16, temperature=1.0, min_p=0.0, seed=seed)  # min_p did something
        assert generate(m.model, m.tokenizer, [prompt], loose, procs(m.config.vocab_size))[0].text != out.choices[0].text
    for off in ({"top_k": 0}, {"top_k": -1}, {"min_p": 0.0}, {"repetition_penalty": 1.0}):  # vLLM's "off" values
        out = client.completions.create(model="kjv", prompt=prompt, max_tokens=16, temperature=0, extra_body=off)
        assert out.choices[0].text == greedy, off
    ref = generate(m.model, m.tokenizer, [prompt], SamplingParams(max_new_tokens=24, temperature=0.0,
                                                                  repetition_penalty=1.8),
                   server.app.state.watermarks.processors(m.config.vocab_size))[0].text
    assert ref != library_greedy(server, "kjv", prompt, 24).text  # the penalty changes this reply
    chat = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                                          temperature=0, extra_body={"repetition_penalty": 1.8, "top_k": 5})
    assert chat.choices[0].message.content is not None
    out = client.completions.create(model="kjv", prompt=prompt, max_tokens=24, temperature=0,
                                    extra_body={"repetition_penalty": 1.8})
    assert out.choices[0].text == ref


def test_to_sampling_params_maps_every_field():
    from genloom.serve.protocol import ChatCompletionRequest

    body = ChatCompletionRequest(model="chat", messages=[{"role": "user", "content": "hi"}], temperature=0.7,
                                 top_p=0.9, top_k=-1, min_p=0.05, repetition_penalty=1.2, presence_penalty=0.5,
                                 frequency_penalty=0.25, stop="\n", seed=10, min_tokens=3)
    sp = body.to_sampling_params(max_new_tokens=20, extra_stop=["\nUser:"], choice=2)
    assert sp == SamplingParams(max_new_tokens=20, min_new_tokens=3, temperature=0.7, top_k=0, top_p=0.9, min_p=0.05,
                                repetition_penalty=1.2, presence_penalty=0.5, frequency_penalty=0.25,
                                stop=["\nUser:", "\n"], seed=12)
    assert body.to_sampling_params(max_new_tokens=2).min_new_tokens == 2  # min_tokens capped by the room left


def test_chat_template_file(tmp_path):
    assert ChatTemplate.load(tmp_path).render([("user", "Hi")]) == "User: Hi\nBot:"
    assert ChatTemplate.load(tmp_path).stop == DEFAULT_CHAT_TEMPLATE["stop"]
    (tmp_path / "chat_template.json").write_text(json.dumps({"user": "Q: {content}\n", "generation_prompt": "A:",
                                                             "stop": ["\nQ:"]}))
    t = ChatTemplate.load(tmp_path)
    assert t.render([("system", "S {x}"), ("user", "Hi")]) == "S {x}\nQ: Hi\nA:" and t.stop == ["\nQ:"]
    (tmp_path / "chat_template.json").write_text(json.dumps({"usr": "Q: {content}"}))
    with pytest.raises(Exception, match="unknown keys"):
        ChatTemplate.load(tmp_path)


def test_metrics_after_requests(client, raw):
    client.completions.create(model="kjv", prompt="And", max_tokens=4, temperature=0)
    r = raw.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ["genloom:num_requests_running", "genloom:num_requests_waiting",
                 "genloom:time_to_first_token_seconds_bucket", "genloom:time_per_output_token_seconds_bucket",
                 "genloom:e2e_request_latency_seconds_count", "genloom:prompt_tokens_total",
                 "genloom:generation_tokens_total", "genloom:request_success_total"]:
        assert name in text, name
    value = next(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith('genloom:generation_tokens_total{model_name="kjv"}'))
    assert value >= 4
    assert 'finished_reason="length"' in text


# ---- bad input: OpenAI's error body, the right status, never a 500 ----


def _error(r, status, param="?", code="?"):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param != "?":
        assert err["param"] == param
    if code != "?":
        assert err["code"] == code
    return err


def test_malformed_json(raw):
    json_type = {"content-type": "application/json"}
    r = raw.post("/v1/completions", content=b'{"model": "kjv", "prompt": ', headers=json_type)
    err = _error(r, 400, param=None)
    assert err["type"] == "invalid_request_error" and "JSON" in err["message"]
    _error(raw.post("/v1/chat/completions", json=["not", "an", "object"]), 400)
    _error(raw.post("/v1/completions", content=b"", headers={"content-type": "application/json"}), 400)


OK_COMPLETION = {"model": "kjv", "prompt": "And", "max_tokens": 2}
OK_CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"prompt": "And"}, "model"),
    ("/v1/completions", {"model": "kjv"}, "prompt"),
    ("/v1/chat/completions", {"model": "chat"}, "messages"),
    ("/v1/completions", {**OK_COMPLETION, "max_tokens": "5"}, "max_tokens"),
    ("/v1/completions", {**OK_COMPLETION, "temperature": "hot"}, "temperature"),
    ("/v1/completions", {**OK_COMPLETION, "n": True}, "n"),
    ("/v1/completions", {**OK_COMPLETION, "stop": ["ok", 1]}, "stop"),
    ("/v1/completions", {**OK_COMPLETION, "prompt": 42}, "prompt"),
    ("/v1/chat/completions", {**OK_CHAT, "messages": [{"role": "robot", "content": "Hi"}]}, "messages[0].role"),
    ("/v1/chat/completions", {**OK_CHAT, "messages": [{"role": "user"}]}, "messages[0].content"),
    ("/v1/chat/completions", {**OK_CHAT, "messages": []}, "messages"),
    ("/v1/completions", {**OK_COMPLETION, "foo": 1}, "foo"),
    ("/v1/chat/completions", {**OK_CHAT, "functions": []}, "functions"),
    ("/v1/completions", {**OK_COMPLETION, "max_tokens": -1}, "max_tokens"),
    ("/v1/completions", {**OK_COMPLETION, "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {**OK_COMPLETION, "max_tokens": LIMITS["max_tokens"] + 1}, "max_tokens"),
    ("/v1/chat/completions", {**OK_CHAT, "max_completion_tokens": 10_000}, "max_completion_tokens"),
    ("/v1/completions", {**OK_COMPLETION, "n": LIMITS["max_n"] + 1}, "n"),
    ("/v1/completions", {**OK_COMPLETION, "temperature": 5}, "temperature"),
    ("/v1/completions", {**OK_COMPLETION, "top_p": 0}, "top_p"),
    ("/v1/completions", {**OK_COMPLETION, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/v1/completions", {**OK_COMPLETION, "prompt": ""}, "prompt"),
    ("/v1/completions", {**OK_COMPLETION, "prompt": []}, "prompt"),
    ("/v1/completions", {**OK_COMPLETION, "prompt": [5, 99999]}, "prompt"),
    ("/v1/completions", {**OK_COMPLETION, "logprobs": 2}, "logprobs"),
    ("/v1/chat/completions", {**OK_CHAT, "tools": [{"type": "function"}]}, "tools[0].type"),
    ("/v1/completions", {**OK_COMPLETION, "top_k": -2}, "top_k"),
    ("/v1/chat/completions", {**OK_CHAT, "top_k": "5"}, "top_k"),
    ("/v1/completions", {**OK_COMPLETION, "min_p": 1.5}, "min_p"),
    ("/v1/chat/completions", {**OK_CHAT, "min_p": -0.1}, "min_p"),
    ("/v1/completions", {**OK_COMPLETION, "repetition_penalty": 0}, "repetition_penalty"),
    ("/v1/chat/completions", {**OK_CHAT, "repetition_penalty": -1.2}, "repetition_penalty"),
])
def test_bad_request_fields(raw, path, body, param):
    err = _error(raw.post(path, json=body), 400, param=param)
    assert err["type"] == "invalid_request_error"


def test_prompt_longer_than_context(raw, client):
    long = "And God said " * 200  # far beyond kjv's 256 tokens
    _error(raw.post("/v1/completions", json={**OK_COMPLETION, "prompt": long}), 400, param="prompt",
           code="context_length_exceeded")
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": long}])
    assert e.value.status_code == 400 and e.value.code == "context_length_exceeded"


def test_unknown_model_and_route(raw, client):
    err = _error(raw.post("/v1/completions", json={**OK_COMPLETION, "model": "gpt-4"}), 404, code="model_not_found")
    assert "chat" in err["message"] and "kjv" in err["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])
    _error(raw.get("/v1/models/nope"), 404, code="model_not_found")
    _error(raw.get("/v1/nothing-here"), 404)
    _error(raw.get("/v1/completions"), 405)


def test_server_still_healthy_after_bad_input(client):
    out = client.completions.create(model="kjv", prompt="And", max_tokens=3, temperature=0)
    assert out.choices[0].text


# ---- a busy server: 429 with Retry-After; a disconnect cancels the engine request ----


@pytest.fixture(scope="module")
def busy():
    s = Server(create_app([CHAT], max_batch=1, max_queue=1, api_key="secret", retry_after_s=2))
    model = s.model("chat").model
    forward, s.gate, s.fail_decode = model.forward, threading.Event(), False
    s.gate.set()

    def gated(ids, *a, **kw):  # the test closes the gate to hold the engine mid-request, whatever the reply's length
        s.gate.wait(timeout=30)
        if s.fail_decode and ids.shape[1] == 1:
            raise RuntimeError("boom")
        return forward(ids, *a, **kw)

    model.forward = gated
    yield s
    s.gate.set()
    s.close()


def cancelled_count(url) -> float:
    for line in httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer secret"}).text.splitlines():
        if line.startswith("genloom:request_success_total") and 'finished_reason="cancelled"' in line:
            return float(line.split()[-1])
    return 0.0


def test_api_key(busy):
    body = {**OK_CHAT, "max_tokens": 1}
    _error(httpx.post(f"{busy.url}/v1/chat/completions", json=body), 401, code="invalid_api_key")
    _error(httpx.post(f"{busy.url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope"}), 401)
    ok = httpx.post(f"{busy.url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer secret"})
    assert ok.status_code == 200


def spy_on(engine, monkeypatch):
    """Record the engine requests the HTTP layer submits and the ones it cancels."""
    submitted, cancelled = [], []
    submit = engine.submit

    def spy(prompt, sp):
        h = submit(prompt, sp)
        cancel = h.cancel
        h.cancel = lambda: (cancelled.append(h), cancel())[1]
        submitted.append(h)
        return h

    monkeypatch.setattr(engine, "submit", spy)
    return submitted, cancelled


def test_request_bigger_than_the_server_is_400(busy):
    r = httpx.post(f"{busy.url}/v1/completions", json={"model": "chat", "prompt": "Hi", "max_tokens": 2, "n": 3},
                   headers={"Authorization": "Bearer secret"})
    _error(r, 400, param="n")


def test_plain_request_disconnect_cancels(busy, monkeypatch):
    submitted, cancelled = spy_on(busy.engine("chat"), monkeypatch)
    busy.gate.clear()
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{busy.url}/v1/chat/completions", json={**OK_CHAT, "max_tokens": 8},
                       headers={"Authorization": "Bearer secret"}, timeout=0.5)
        assert wait_for(lambda: len(cancelled) == 1, timeout=5.0) and cancelled[0] is submitted[0]
    finally:
        busy.gate.set()
    assert submitted[0].result(timeout=10)


def test_engine_failure_is_a_500_not_a_hang(busy):
    busy.fail_decode = True
    try:
        r = httpx.post(f"{busy.url}/v1/chat/completions", json={**OK_CHAT, "max_tokens": 8},
                       headers={"Authorization": "Bearer secret"}, timeout=20)
        err = _error(r, 500)
        assert err["type"] == "server_error" and "boom" in err["message"]
        r = httpx.post(f"{busy.url}/v1/chat/completions", json={**OK_CHAT, "max_tokens": 8, "stream": True},
                       headers={"Authorization": "Bearer secret"}, timeout=20)
        assert r.status_code == 200 and '"error"' in r.text and r.text.endswith("data: [DONE]\n\n")
    finally:
        busy.fail_decode = False


def test_serve_binds_loopback_by_default():
    import inspect

    from genloom.serve.app import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"


def test_serve_defaults_to_the_bundled_models(monkeypatch):
    """`genloom serve` with no --model serves the bundled models found beside the package."""
    from genloom.cli import serve as serve_cli
    from genloom.serve.models import bundled_model_paths

    names = [p.name for p in bundled_model_paths()]
    assert {"chat", "chat-kb", "kjv", "tang", "fmnist-diffusion"} <= set(names)
    seen = {}
    monkeypatch.setattr(serve_cli.server, "serve", lambda paths, **kw: seen.update(paths=paths, **kw))
    from genloom.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--port", "1"])
    assert e.value.code == 0 and [Path(p).name for p in seen["paths"]] == names and seen["host"] == "127.0.0.1"


def test_queue_full_429_and_disconnect_cancels(busy, monkeypatch):
    engine = busy.engine("chat")
    submitted, cancelled = spy_on(engine, monkeypatch)
    auth = {"Authorization": "Bearer secret"}
    body = {"model": "chat", "messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 32,
            "stream": True}
    before = engine.stats()["cancelled"]
    busy.gate.clear()  # the engine blocks in its next forward pass: A holds the one slot, B the one queue place
    try:
        with httpx.Client(base_url=busy.url, headers=auth, timeout=30) as a, \
                httpx.Client(base_url=busy.url, headers=auth, timeout=30) as b:
            with a.stream("POST", "/v1/chat/completions", json=body) as ra:
                assert ra.status_code == 200
                assert wait_for(lambda: engine.stats()["waiting"] == 0)  # A left the queue for the engine
                with b.stream("POST", "/v1/chat/completions", json=body) as rb:
                    assert rb.status_code == 200 and engine.stats()["waiting"] == 1
                    full = httpx.post(f"{busy.url}/v1/chat/completions", json={**body, "stream": False}, headers=auth)
                    err = _error(full, 429, code="rate_limit_exceeded")
                    assert full.headers["retry-after"] == "2" and err["type"] == "rate_limit_error"
                    oa = openai.OpenAI(base_url=f"{busy.url}/v1", api_key="secret", max_retries=0)
                    with pytest.raises(openai.RateLimitError):
                        oa.completions.create(model="chat", prompt="Hi", max_tokens=2)
            # both clients went away mid-reply: the server must cancel their engine requests
            assert wait_for(lambda: cancelled_count(busy.url) >= 2, timeout=5.0)
            assert len(submitted) == 2 and {id(h) for h in cancelled} == {id(h) for h in submitted}
    finally:
        busy.gate.set()
    assert wait_for(lambda: engine.stats()["running"] == 0 and engine.stats()["waiting"] == 0, timeout=10.0)
    # the engine honoured both cancels: B left the queue, A left the batch at its next step
    assert [h.result(timeout=5)[1] for h in submitted] == ["cancelled", "cancelled"]
    assert engine.stats()["cancelled"] - before == 2, engine.stats()
    ok = httpx.post(f"{busy.url}/v1/chat/completions", json={**OK_CHAT, "max_tokens": 2}, headers=auth)
    assert ok.status_code == 200  # the slots are free again


def test_a_slow_model_does_not_block_the_others(monkeypatch):
    import genloom.serve.app as app_module

    release = threading.Event()
    real = app_module.load_served

    def slow_for_kjv(path, **kw):
        if Path(path).name == "kjv":
            assert release.wait(30)
        return real(path, **kw)

    monkeypatch.setattr(app_module, "load_served", slow_for_kjv)
    s = Server(create_app([CHAT, KJV], max_batch=2, max_queue=4, **LIMITS), wait_ready=False)
    try:
        assert wait_for(lambda: "chat" in s.app.state.models, timeout=30)
        health = httpx.get(f"{s.url}/health")
        assert health.status_code == 503 and health.json()["loading"] == ["kjv"]
        r = httpx.post(f"{s.url}/v1/completions", json={"model": "chat", "prompt": "Hi", "max_tokens": 4})
        assert r.status_code == 200  # served while kjv is still loading
        r = httpx.post(f"{s.url}/v1/completions", json={"model": "kjv", "prompt": "Hi", "max_tokens": 4})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading" and r.headers["retry-after"]
        release.set()
        assert wait_for(lambda: httpx.get(f"{s.url}/health").status_code == 200, timeout=30)
        r = httpx.post(f"{s.url}/v1/completions", json={"model": "kjv", "prompt": "Hi", "max_tokens": 4})
        assert r.status_code == 200
    finally:
        release.set()
        s.close()


def test_content_chunks_are_the_bytes_of_the_whole_chunk_encoded():
    """The chat stream's content deltas are encoded into a per-choice template (routes/completions.content_chunks):
    each must be exactly json.dumps of the whole chunk, whatever the text holds, with one `created` per stream."""
    from genloom.serve.protocol import Delta
    from genloom.serve.routes.completions import _chat_chunk, _Job, content_chunks

    class Served:
        name = 'ch"at\\'

    job = _Job("chatcmpl-x", Served(), [], [], 0.0)
    encode = content_chunks(job)
    texts = [" hello", 'a "quoted" \\ back', "line\nbreak\ttab", "é 中文 😀", "\x00\x1f\x7f", "", "</script>", "\u2028"]
    for i in (0, 3):
        created = json.loads(encode(i, "x"))["created"]
        for text in texts:
            want = json.dumps({**_chat_chunk(job, i, Delta(content=text)), "created": created}, ensure_ascii=False)
            assert encode(i, text) == want
            assert json.loads(encode(i, text))["choices"][0] == {"index": i, "delta": {"content": text},
                                                                 "logprobs": None, "finish_reason": None}
