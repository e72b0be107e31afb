"""POST /v1/audio/music: formats, seeds, primers (base64 and uploaded files), OpenAI-style 4xx on bad input,
the music model in /v1/models, and the text routes refusing it."""

from __future__ import annotations

import base64
import io
import time
import wave
from pathlib import Path

import pytest
import symusic
from fastapi.testclient import TestClient

from genloom.safety import labels
from genloom.serve.app import create_app
from test_music_generate import make_score, notes_of, tiny_music_model  # noqa: F401  (a fixture)

CHAT = str(Path(__file__).resolve().parents[1] / "models" / "chat")


@pytest.fixture(scope="module")
def client(tiny_music_model, tmp_path_factory):  # noqa: F811
    app = create_app([str(tiny_music_model), CHAT], max_batch=1, max_queue=2, jobs=False,
                     data_dir=str(tmp_path_factory.mktemp("music-data")))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        deadline = time.monotonic() + 120
        while len(c.get("/v1/models").json()["data"]) < 2 and time.monotonic() < deadline:  # models load at start
            time.sleep(0.2)
        yield c


def name(tiny_music_model):  # noqa: F811
    return Path(tiny_music_model).name


def post(client, **body):
    return client.post("/v1/audio/music", json=body)


def test_models_lists_the_music_model_as_music(client, tiny_music_model):  # noqa: F811
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    card = cards[name(tiny_music_model)]["genloom"]
    assert card["kind"] == "music" and "midi" in card["formats"] and "bars" in card["options"]
    assert cards["chat"]["genloom"]["kind"] == "text"


def test_json_holds_midi_mp3_and_piano_roll_and_seeds_repeat(client, tiny_music_model):  # noqa: F811
    body = dict(model=name(tiny_music_model), seconds=1.0, seed=9, response_format="json", top_k=30)
    a, b = post(client, **body), post(client, **body)
    assert a.status_code == 200, a.text
    ja, jb = a.json(), b.json()
    assert ja["seed"] == 9 and ja["object"] == "audio.music" and ja["audio_format"] == "mp3"
    midi = base64.b64decode(ja["midi"])
    assert midi.startswith(b"MThd") and notes_of(midi) == notes_of(base64.b64decode(jb["midi"]))
    assert ja["aigc"]["ProduceID"] == ja["id"] and b"AIGC" in midi
    assert base64.b64decode(ja["piano_roll"]).startswith(b"\x89PNG")
    mp3 = base64.b64decode(ja["audio"])
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF


@pytest.mark.parametrize("fmt, media, magic", [("wav", "audio/wav", b"RIFF"), ("midi", "audio/midi", b"MThd"),
                                               ("mp3", "audio/mpeg", b"")])
def test_audio_bytes_in_each_format(client, tiny_music_model, fmt, media, magic):  # noqa: F811
    r = post(client, model=name(tiny_music_model), seconds=0.5, seed=1, response_format=fmt)
    assert r.status_code == 200 and r.headers["content-type"] == media and r.content.startswith(magic)
    assert r.headers["x-genloom-seed"] == "1"
    aigc = labels.read_label(r.content, fmt)  # each format's GB 45438 label (ID3 in WAV/MP3, a MIDI text event)
    assert aigc["Label"] == "1" and aigc["ProduceID"] == r.headers["x-genloom-produce-id"]
    if fmt == "wav":
        with wave.open(io.BytesIO(r.content)) as w:
            assert w.getnframes() > 0


def test_primer_as_base64_and_as_an_uploaded_file(client, tiny_music_model):  # noqa: F811
    primer = make_score([60, 64, 67, 72]).dumps_midi()
    by_b64 = post(client, model=name(tiny_music_model), primer=base64.b64encode(primer).decode(), seconds=0.5,
                  seed=2, response_format="midi")
    up = client.post("/v1/files", files={"file": ("primer.mid", primer, "audio/midi")}, data={"purpose": "music"})
    assert up.status_code == 200, up.text
    by_file = post(client, model=name(tiny_music_model), primer_file=up.json()["id"], seconds=0.5, seed=2,
                   response_format="midi")
    assert by_b64.status_code == by_file.status_code == 200 and notes_of(by_b64.content) == notes_of(by_file.content)
    score = symusic.Score.from_midi(by_b64.content)
    notes = {(n.time * 480 // score.ticks_per_quarter, n.pitch) for n in score.tracks[0].notes}
    assert {(i * 480, p) for i, p in enumerate([60, 64, 67, 72])} <= notes  # the primer opens the piece


def _error(r, status, param=None, words=""):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and words in err["message"]
    if param:
        assert err["param"] == param
    return err


def test_bad_input_is_an_openai_style_4xx(client, tiny_music_model):  # noqa: F811
    m = name(tiny_music_model)
    drums = make_score([36, 38], drum=True).dumps_midi()
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    _error(post(client, model=m, bars=0), 400, "bars")
    _error(post(client, model=m, seconds=601), 400, "seconds")
    _error(post(client, model=m, bars=2, seconds=2.0), 400, words="not both")
    _error(post(client, model=m, tempo=1000), 400, "tempo")
    _error(post(client, model=m, response_format="ogg"), 400, "response_format")
    _error(post(client, model=m, primer="%%%"), 400, "primer", "base64")
    _error(post(client, model=m, primer=b64(b"hello")), 400, "primer", "not a MIDI file")
    _error(post(client, model=m, primer=b64(drums)), 400, "primer", "only drum notes")
    _error(post(client, model=m, primer=b64(symusic.Score(480).dumps_midi())), 400, "primer", "no notes")
    _error(post(client, model=m, primer=b64(drums), primer_file="file-x"), 400, "primer", "not both")
    _error(post(client, model=m, primer_file="file-nope"), 404, "primer_file")
    _error(post(client, model="nope"), 404, "model")
    _error(post(client, model="chat"), 400, "model", "not a music model")
    _error(client.post("/v1/completions", json={"model": m, "prompt": "Bar_None"}), 400, "model", "/v1/audio/music")


def test_midi_uploads_are_checked(client):
    r = client.post("/v1/files", files={"file": ("x.mid", b"MThd\x00\x00\x00\x06", "audio/midi")},
                    data={"purpose": "fine-tune"})
    _error(r, 400, "purpose", "purpose 'music'")
    r = client.post("/v1/files", files={"file": ("x.mid", b"RIFF....", "audio/midi")}, data={"purpose": "music"})
    _error(r, 400, "file", "not MIDI")
    r = client.post("/v1/files", files={"file": ("x.txt", b"some text", "text/plain")}, data={"purpose": "music"})
    _error(r, 400, "purpose")


def test_missing_fluidsynth_is_a_503_naming_the_package_and_midi_still_works(client, tiny_music_model,
                                                                             monkeypatch):  # noqa: F811
    monkeypatch.setenv("GENLOOM_FLUIDSYNTH", "no-such-fluidsynth")
    err = _error(post(client, model=name(tiny_music_model), seconds=0.5), 503, words="Debian package 'fluidsynth'")
    assert err["code"] == "renderer_missing"
    assert post(client, model=name(tiny_music_model), seconds=0.5, response_format="midi").status_code == 200
