"""POST /v1/audio/speech through the official openai client and httpx: formats, streaming sentence by sentence,
server-sent events with usage, the voice in /v1/models, OpenAI-style 4xx on bad input, other routes refusing a voice."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import av
import numpy as np
import openai
import pytest
import soundfile as sf
from test_api_text import CHAT, Server, httpx
from test_speech import joe_dir  # noqa: F401  (a fixture)

from genloom.pipelines import speech
from genloom.safety import labels, watermark, watermark_audio
from genloom.serve.app import create_app

HELLO = "Hello there."


@pytest.fixture(scope="module")
def server(joe_dir, tmp_path_factory):  # noqa: F811
    s = Server(create_app([CHAT, joe_dir], max_batch=1, max_queue=4, jobs=False,
                          data_dir=str(tmp_path_factory.mktemp("speech-data"))))
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def raw(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """FFmpeg (PyAV) decodes every format, streamed FLAC (length unknown in its header) included."""
    with av.open(io.BytesIO(data)) as c:
        frames = [f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]
        return np.concatenate(frames), c.streams.audio[0].rate


def test_models_lists_the_voice_as_speech(client):
    cards = {m.id: m for m in client.models.list().data}
    card = cards["voice-joe"].model_extra["genloom"]
    assert card["kind"] == "speech" and card["voices"] == ["joe"] and card["sample_rate"] == 22050
    assert set(card["formats"]) == {"wav", "flac", "mp3", "opus", "pcm"}
    assert cards["chat"].model_extra["genloom"]["kind"] == "text"


def test_openai_client_create_gives_a_wav(client):
    r = client.audio.speech.create(model="voice-joe", voice="joe", input=HELLO, response_format="wav",
                                   instructions="Speak cheerfully.")
    audio, rate = sf.read(io.BytesIO(r.content))
    assert rate == 22050 and 0.3 < len(audio) / rate < 3.0 and np.abs(audio).max() > 0.5


@pytest.mark.parametrize("fmt,rate,magic", [("mp3", 22050, None), ("flac", 22050, b"fLaC"), ("opus", 48000, b"OggS"),
                                            ("wav", 22050, b"RIFF")])
def test_each_format_decodes(client, fmt, rate, magic):
    with client.audio.speech.with_streaming_response.create(model="voice-joe", voice="joe", input="One. Two.",
                                                            response_format=fmt, speed=1.5) as r:
        assert r.headers["x-sample-rate"] == "22050"
        data = b"".join(r.iter_bytes())
    if magic:
        assert data.startswith(magic)
    audio, got = decode(data)
    assert got == rate and 0.3 < len(audio) / rate < 4.0


def test_answers_are_watermarked_and_labelled(raw, server):
    body = {"model": "voice-joe", "voice": "joe", "input": "Every answer carries its label. And its mark."}
    r = raw.post("/v1/audio/speech", json=body | {"response_format": "wav"})
    header = json.loads(r.headers["x-aigc"])
    record = labels.read_label(r.content, "wav")  # a whole labelled file (implicit labels are on by default)
    assert record["Label"] == "1" and record["ProduceID"] == header["ProduceID"]
    key = server.app.state.watermarks.secret
    assert watermark.detect_bytes(r.content, key)["detected"]
    row = next(h for h in raw.get("/ui/api/history").json()["data"] if h["output"].get("produce_id") == header["ProduceID"])
    assert row["route"] == "/v1/audio/speech"
    r = raw.post("/v1/audio/speech", json=body | {"response_format": "pcm"})  # streamed: the label is the header
    pcm = np.frombuffer(r.content, "<i2")
    assert json.loads(r.headers["x-aigc"])["Label"] == "1"
    assert watermark_audio.detect(pcm, 22050, key.raw)["detected"]


def test_pcm_is_raw_16_bit_at_the_voice_rate(client):
    data = client.audio.speech.create(model="voice-joe", voice="joe", input=HELLO, response_format="pcm").content
    assert len(data) % 2 == 0 and not data.startswith(b"RIFF")
    samples = np.frombuffer(data, "<i2")
    assert 0.3 < len(samples) / 22050 < 3.0 and np.abs(samples).max() > 16000  # peak-normalised speech


def test_audio_streams_sentence_by_sentence(raw):
    text = " ".join(f"This is sentence number {w} of the stream." for w in ("one", "two", "three", "four", "five", "six"))
    t0 = time.perf_counter()
    arrivals = []
    with raw.stream("POST", "/v1/audio/speech", json={"model": "voice-joe", "voice": "joe", "input": text,
                                                      "response_format": "pcm"}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/pcm"
        for chunk in r.iter_raw():
            arrivals.append((time.perf_counter() - t0, len(chunk)))
    total = arrivals[-1][0]
    assert len(arrivals) >= 3  # bytes came as they were made, not in one piece
    assert arrivals[0][0] < 0.6 * total


def test_sse_deltas_then_done_with_usage(raw):
    with raw.stream("POST", "/v1/audio/speech", json={"model": "voice-joe", "voice": "joe", "input": "Yes. No.",
                                                      "response_format": "wav", "stream_format": "sse"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    deltas, done = events[:-1], events[-1]
    assert {e["type"] for e in deltas} == {"speech.audio.delta"} and len(deltas) >= 2
    assert done["type"] == "speech.audio.done" and done["aigc"]["Label"] == "1"
    audio, _ = sf.read(io.BytesIO(b"".join(base64.b64decode(e["audio"]) for e in deltas)))
    usage = done["usage"]
    assert usage["output_tokens"] == len(audio) // 256 and usage["input_tokens"] > 5
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    row = next(h for h in raw.get("/ui/api/history").json()["data"] if h["params"].get("input") == "Yes. No.")
    assert row["route"] == "/v1/audio/speech" and row["model"] == "voice-joe" and row["output"]["sentences"] == 2
    assert row["usage"] == {"prompt_tokens": usage["input_tokens"], "completion_tokens": usage["output_tokens"]}


def test_a_failure_mid_stream_is_an_error_event(raw, server, monkeypatch):
    voice = server.app.state.models["voice-joe"].voice
    real = voice.render
    calls = []

    def second_fails(sentence, **kw):
        calls.append(sentence)
        if len(calls) == 2:
            raise RuntimeError("the voice failed")
        return real(sentence, **kw)

    monkeypatch.setattr(voice, "render", second_fails)
    with raw.stream("POST", "/v1/audio/speech", json={"model": "voice-joe", "voice": "joe", "input": "One. Two.",
                                                      "stream_format": "sse"}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta", "error"]
    assert events[-1]["error"]["message"] == "the voice failed"


def test_synthesis_does_not_block_other_requests(server, raw):
    text = "A long read keeps the voice busy for a while, sentence after sentence. " * 5
    first = threading.Event()
    done = {}

    def long_read():
        body = {"model": "voice-joe", "voice": "joe", "input": text, "response_format": "pcm"}
        with httpx.Client(base_url=server.url, timeout=120) as c, c.stream("POST", "/v1/audio/speech", json=body) as r:
            for _ in r.iter_raw():
                first.set()
        done["t"] = time.perf_counter()

    th = threading.Thread(target=long_read)
    th.start()
    assert first.wait(60)
    t0 = time.perf_counter()
    assert raw.get("/health").status_code == 200
    assert raw.get("/v1/models").status_code == 200
    answered = time.perf_counter()
    th.join(120)
    assert answered - t0 < 1.0 and answered < done["t"]  # answered while the read went on


def _error(r, status, param, *words):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param
    for w in words:
        assert w in err["message"], err["message"]
    return err


@pytest.mark.parametrize("body,status,param,words", [
    ({"input": ""}, 400, "input", ["empty"]),
    ({"input": " \n "}, 400, "input", ["empty"]),
    ({"input": "x" * 4097}, 400, "input", ["4096"]),
    ({"input": "... !"}, 400, "input", ["nothing to speak"]),
    ({"voice": "alloy"}, 400, "voice", ["alloy", "joe"]),
    ({"speed": 4.5}, 400, "speed", ["4"]),
    ({"speed": 0.1}, 400, "speed", ["0.25"]),
    ({"response_format": "aac"}, 400, "response_format", ["mp3", "pcm"]),
    ({"stream_format": "chunks"}, 400, "stream_format", ["sse"]),
    ({"model": "nope"}, 404, "model", ["voice-joe", "chat"]),
    ({"model": "chat"}, 400, "model", ["not a speech model", "voice-joe"]),
])
def test_bad_input_is_an_openai_style_4xx(raw, body, status, param, words):
    r = raw.post("/v1/audio/speech", json={"model": "voice-joe", "voice": "joe", "input": HELLO, **body})
    _error(r, status, param, *words)


def test_openai_client_sees_bad_input(client):
    with pytest.raises(openai.BadRequestError, match="choose one of joe"):
        client.audio.speech.create(model="voice-joe", voice="alloy", input=HELLO)
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="voice-nobody", voice="joe", input=HELLO)


def test_other_routes_refuse_a_voice(raw):
    use = "/v1/audio/speech"
    _error(raw.post("/v1/chat/completions", json={"model": "voice-joe", "messages": [{"role": "user", "content": "hi"}]}),
           400, "model", use)
    _error(raw.post("/v1/completions", json={"model": "voice-joe", "prompt": "hi"}), 400, "model", use)
    _error(raw.post("/v1/images/generations", json={"model": "voice-joe", "prompt": "a cat"}), 400, "model", use)
    _error(raw.post("/v1/audio/music", json={"model": "voice-joe"}), 400, "model", use)


def test_missing_espeak_is_a_503_naming_the_package(raw, monkeypatch):
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    r = raw.post("/v1/audio/speech", json={"model": "voice-joe", "voice": "joe", "input": HELLO})
    assert r.status_code == 503 and r.json()["error"]["code"] == "phonemizer_missing"
    assert "Debian package espeak-ng" in r.json()["error"]["message"]

