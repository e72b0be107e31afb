"""/v1/audio/transcriptions and /v1/audio/translations through the official openai client, every response format,
on a real LibriVox clip; the bad inputs (unknown model, bad format, not audio, empty, over the limit) as OpenAI's
JSON errors; uploads stay inside the data directory; Whisper listed in /v1/models."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import openai
import pytest
import soundfile as sf

try:  # openai >= 3 ships its HTTP client as httpx2
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx
from test_api_text import Server
from test_asr import CLIP, CLIP_TEXT, NORM, encode, german_speech, wer, whisper_dir  # noqa: F401  (fixtures)

from genloom.pipelines import asr
from genloom.serve.app import create_app
from genloom.serve.models import bundled_model_paths

CARDS = CLIP.parent.parent / "cards" / "001.wav"  # "ten of clubs", 1.1 s


@pytest.fixture(scope="module")
def served(whisper_dir, tmp_path_factory):  # noqa: F811
    data = tmp_path_factory.mktemp("data")
    s = Server(create_app([str(whisper_dir)], data_dir=str(data), jobs=False))
    yield s, data
    s.close()


@pytest.fixture(scope="module")
def client(served):
    s, _ = served
    return openai.OpenAI(base_url=f"{s.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def name(whisper_dir):  # noqa: F811
    return whisper_dir.name


def test_models_list_the_recognizer(client, name):
    card = next(m for m in client.models.list().data if m.id == name)
    facts = card.model_extra["genloom"]
    assert facts["kind"] == "speech-to-text" and "en" in facts["languages"] and "verbose_json" in facts["formats"]
    assert "MIT" in facts["description"]


def test_genloom_serve_serves_the_imported_recognizer_by_default():
    imported = asr.is_whisper_folder(asr.NAMES["whisper-base"])  # scripts/setup.sh imports it
    assert (asr.NAMES["whisper-base"] in bundled_model_paths()) == imported


def test_every_response_format_through_the_client(client, name):
    with open(CLIP, "rb") as f:
        out = client.audio.transcriptions.create(file=f, model=name, response_format="json")
    assert wer(out.text, CLIP_TEXT) <= 0.1, out.text
    data = CLIP.read_bytes()
    cards = CARDS.read_bytes()  # text, srt, vtt on a 1 s clip ("ten of clubs"): the formats, not the words
    text = client.audio.transcriptions.create(file=("cards.wav", cards), model=name, response_format="text",
                                              language="en")
    assert isinstance(text, str) and text.endswith("\n") and "10 of" in text  # measured: "10 of clothes"
    srt = client.audio.transcriptions.create(file=("cards.wav", cards), model=name, response_format="srt")
    assert srt.startswith("1\n00:00:00,") and " --> 00:00:0" in srt and text.strip() in srt
    vtt = client.audio.transcriptions.create(file=("cards.wav", cards), model=name, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.") and text.strip() in vtt
    verbose = client.audio.transcriptions.create(file=("clip.wav", data), model=name, response_format="verbose_json",
                                                 timestamp_granularities=["word", "segment"])
    assert verbose.language == "en" and verbose.duration == pytest.approx(2.99, abs=0.01)
    assert verbose.text == out.text and verbose.segments[0].end <= 3.5 and len(verbose.words) >= 6
    assert [w.word for w in verbose.words][-1].lower().startswith("man")


def test_other_upload_formats_and_a_prompt(client, name):
    mp3 = client.audio.transcriptions.create(file=("clip.mp3", encode(CLIP, "mp3")), model=name, language="en")
    assert wer(mp3.text, CLIP_TEXT) <= 0.15, mp3.text
    webm = client.audio.transcriptions.create(file=("clip.webm", encode(CLIP, "webm")), model=name, language="en",
                                              prompt="ten of clubs, seven of hearts, queen of spades")
    assert wer(webm.text, CLIP_TEXT) <= 0.15, webm.text


def test_translation_through_the_client(client, name, german_speech):  # noqa: F811
    with open(german_speech, "rb") as f:  # "Ich habe einen Hund." read by espeak-ng
        out = client.audio.translations.create(file=f, model=name, response_format="verbose_json")
    words = set(NORM(out.text).split())
    assert out.task == "translate" and out.language == "de" and "have" in words and "habe" not in words, out.text
    cards = CARDS.read_bytes()  # the other formats on a 1 s English clip (English speech "translates" to itself)
    for fmt in ("json", "text", "srt", "vtt"):
        got = client.audio.translations.create(file=("cards.wav", cards), model=name, response_format=fmt)
        text = got if isinstance(got, str) else got.text
        assert "10 of" in text and (fmt != "srt" or text.startswith("1\n")), (fmt, text)


def _error(r, status, param=None, words=""):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and words in err["message"], err
    if param is not None:
        assert err["param"] == param, err
    return err


def test_bad_input_is_an_openai_style_4xx(served, client, name, tmp_path):
    s, _ = served
    url = f"{s.url}/v1/audio/transcriptions"
    wav = CLIP.read_bytes()
    with pytest.raises(openai.NotFoundError, match=f"choose one of: {name}"):
        client.audio.transcriptions.create(file=("a.wav", wav), model="whisper-1")
    with pytest.raises(openai.BadRequestError, match="Unsupported response_format 'docx'"):
        client.audio.transcriptions.create(file=("a.wav", wav), model=name, response_format="docx")
    with pytest.raises(openai.BadRequestError, match="is not audio"):
        client.audio.transcriptions.create(file=("notes.wav", b"just some text, no sound " * 50), model=name)
    _error(httpx.post(url, files={"file": ("a.wav", b"")}, data={"model": name}), 400, "file", "empty")
    silent = io.BytesIO()
    sf.write(silent, np.zeros(0, np.float32), 16000, format="WAV")
    _error(httpx.post(url, files={"file": ("a.wav", silent.getvalue())}, data={"model": name}), 400, "file", "empty")
    _error(httpx.post(url, data={"model": name}), 400, "file")
    _error(httpx.post(url, files={"file": ("a.wav", wav)}), 400, "model", "'model'")
    _error(httpx.post(url, json={"model": name}), 400, "file", "multipart/form-data")
    _error(httpx.post(url, files={"file": ("a.wav", wav)}, data={"model": name, "language": "xx"}), 400, "language",
           "choose one of")
    _error(httpx.post(url, files={"file": ("a.wav", wav)}, data={"model": name, "temperature": "2"}), 400,
           "temperature")
    _error(httpx.post(url, files={"file": ("a.wav", wav)},
                      data={"model": name, "timestamp_granularities[]": "word"}), 400, words="verbose_json")
    _error(httpx.post(url, files={"file": ("a.wav", wav)},
                      data={"model": name, "response_format": "verbose_json", "timestamp_granularities[]": "char"}),
           400, words="'char'")
    _error(httpx.post(f"{s.url}/v1/audio/translations", files={"file": ("a.wav", wav)},
                      data={"model": name, "language": "de"}), 400, "language", "Unrecognized request argument")
    _error(httpx.post(f"{s.url}/v1/completions", json={"model": name, "prompt": "hi"}), 400, "model",
           "speech recognition model")


def test_a_20_minute_upload_is_refused_on_the_bytes_read(served, name):
    s, data = served
    pcm = np.zeros(20 * 60 * 16000, np.int16).tobytes()  # 20 minutes of 16 kHz 16-bit mono: 38.4 MB
    header = io.BytesIO()
    sf.write(header, np.zeros(1, np.int16), 16000, format="WAV", subtype="PCM_16")
    wav = header.getvalue()[:-2] + pcm
    err = _error(httpx.post(f"{s.url}/v1/audio/transcriptions", files={"file": ("long.wav", wav)},
                            data={"model": name}, timeout=60), 413, "file", f"{25 << 20} bytes")
    assert err["type"] == "invalid_request_error"
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{name}\r\n--{boundary}\r\n"
            "Content-Disposition: form-data; name=\"file\"; filename=\"long.wav\"\r\n\r\n").encode()

    def chunked():  # no Content-Length: only counting the bytes read can stop it
        yield head
        for i in range(0, len(wav), 1 << 20):
            yield wav[i: i + 1 << 20]
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(f"{s.url}/v1/audio/transcriptions", content=chunked(), timeout=60,
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    _error(r, 413)
    time.sleep(0.2)
    assert not list((data / "tmp").iterdir()), "an upload was left behind"


def test_uploads_stay_in_the_data_dir_and_history_records_them(served, client, name):
    s, data = served
    client.audio.transcriptions.create(file=("../../escape.wav", CARDS.read_bytes()), model=name, language="en")
    assert not (data.parent / "escape.wav").exists() and not list((data / "tmp").iterdir())
    rows = httpx.get(f"{s.url}/ui/api/history").json()["data"]
    row = next(r for r in rows if r["route"] == "/v1/audio/transcriptions")
    assert row["model"] == name and row["output"]["language"] == "en" and row["output"]["text"]
    assert json.dumps(row)  # stored as plain JSON
