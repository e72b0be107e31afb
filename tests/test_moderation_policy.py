"""The moderation policy on the server: /v1/moderations through the openai client, block / flag / off on prompts
and outputs (a stream that turns harmful ends with content_filter), the policy file and its errors."""

from __future__ import annotations

import base64
import io
import json
import logging
import time

import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_api_text import CHAT, Server
from test_images_api import faces  # noqa: F401  (a fixture: the imported dcgan-faces model)
from test_asr import whisper_dir  # noqa: F401  (a fixture)
from test_music_generate import make_score, tiny_music_model  # noqa: F401  (a fixture)
from test_speech import joe, joe_dir  # noqa: F401  (fixtures)

from genloom.errors import GenloomError
from genloom.safety import moderation
from genloom.safety import policy as pol
from genloom.pipelines.audio_encode import encode
from genloom.serve.app import create_app


def ready(c: TestClient) -> TestClient:
    """Wait until the models have loaded (they load in the background of the lifespan)."""
    deadline = time.monotonic() + 60
    while c.get("/health").status_code != 200:
        assert time.monotonic() < deadline, "the model did not load"
        time.sleep(0.05)
    return c


def png_url() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (90, 140, 200)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    s = Server(create_app([CHAT], max_batch=2, max_queue=4, jobs=False, data_dir=str(tmp_path_factory.mktemp("d")),
                          moderation=pol.load_policy(),  # what `genloom serve` runs with by default: block
                          watermark="off"))  # the seeded replies below must not depend on a fresh random key
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0, timeout=60)


def test_moderations_in_omni_shape_through_the_openai_client(client):
    res = client.moderations.create(model="omni-moderation-latest", input=["我要杀了你", "Kill the process with SIGTERM"])
    threat, benign = res.results
    assert res.model == "genloom-moderation-2"
    assert threat.flagged and threat.categories.violence and not benign.flagged
    assert threat.category_applied_input_types.violence == ["text"]
    assert set(threat.category_scores.model_dump()) >= {"harassment_threatening", "self_harm_instructions",
                                                        "illicit_violent", "sexual_minors", "violence_graphic"}
    parts = client.moderations.create(input=[{"type": "text", "text": "a blue square"},
                                             {"type": "image_url", "image_url": {"url": png_url()}}])
    (r,) = parts.results
    assert not r.flagged and r.category_applied_input_types.sexual == ["text", "image"]
    with pytest.raises(openai.NotFoundError):
        client.moderations.create(model="llama-guard", input="x")


def test_moderation_bad_input_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError, match="limit is 10,000"):
        client.moderations.create(input="x" * 10_001)
    with pytest.raises(openai.BadRequestError, match="not an image"):
        client.moderations.create(input=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}])
    with pytest.raises(openai.BadRequestError, match="fetches no remote URLs"):
        client.moderations.create(input=[{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    with pytest.raises(openai.BadRequestError, match="At most 32"):
        client.moderations.create(input=["hi"] * 33)


def test_block_refuses_a_harmful_prompt_naming_the_category(client, served):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "教我怎么做炸弹"}],
                                       max_tokens=4)
    err = e.value.body
    assert err["code"] == "content_policy_violation" and err["param"] == "messages"
    assert "illicit" in err["message"]
    ok = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hello there"}],
                                        max_tokens=4, temperature=0)  # greedy: the same harmless reply every run
    assert ok.choices[0].finish_reason in ("stop", "length")


PROMPT = "What is your name?"  # seed 2: a 47-character reply from the chat starter, unmoderated


def _flag_all_output(monkeypatch):
    """Any text but the prompt is flagged as violence (a harmful turn of the reply, made certain)."""
    def fake(texts, model=None, thresholds=None):
        return [{"flagged": t != PROMPT, "categories": {"violence": t != PROMPT}, "category_scores": {"violence": 0.99}}
                for t in texts]
    monkeypatch.setattr(pol, "moderate", fake)


def test_a_stream_that_turns_harmful_ends_with_content_filter(client, served, monkeypatch):
    ask = dict(model="chat", messages=[{"role": "user", "content": PROMPT}], max_tokens=60, temperature=0.8, seed=2)
    full = client.chat.completions.create(**ask).choices[0]
    assert full.finish_reason == "stop" and len(full.message.content) > 30
    _flag_all_output(monkeypatch)
    chunks = list(client.chat.completions.create(**ask, stream=True))
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == ["content_filter"]
    sent = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(sent) < len(full.message.content) and full.message.content.startswith(sent.strip())
    plain = client.chat.completions.create(**ask).choices[0]
    assert plain.finish_reason == "content_filter" and plain.message.content == sent.strip()


def test_flag_serves_and_records_in_the_history(tmp_path, monkeypatch, caplog):
    app = create_app([CHAT], max_batch=1, max_queue=2, jobs=False, data_dir=str(tmp_path),
                     moderation=pol.Policy(mode="flag"))
    with caplog.at_level(logging.WARNING, logger="genloom.safety"):
        with TestClient(app, base_url="http://127.0.0.1") as c:
            r = ready(c).post("/v1/chat/completions", json={"model": "chat", "max_tokens": 4,
                                                            "messages": [{"role": "user", "content": "我想自杀"}]})
            assert r.status_code == 200
            rows = app.state.db.history(5)
    mod = rows[0].output["moderation"]
    assert mod[0]["where"] == "input" and "self-harm" in mod[0]["categories"]
    assert any("moderation_flagged" in m.getMessage() for m in caplog.records)


def test_cli_default_is_block(run_main, monkeypatch):
    seen = {}
    monkeypatch.setattr("genloom.serve.app.serve", lambda paths, **kw: seen.update(kw))
    code, out, err = run_main("serve", "--model", CHAT, "--no-jobs")
    assert code == 0 and seen["moderation"].mode == "block" and "moderation block" in err


def test_off_is_a_warning_at_startup(caplog):
    with caplog.at_level(logging.WARNING, logger="genloom.safety"):
        with TestClient(create_app([CHAT], max_batch=1, max_queue=1, jobs=False, moderation=pol.Policy(mode="off")),
                        base_url="http://127.0.0.1") as c:
            r = ready(c).post("/v1/chat/completions", json={"model": "chat", "max_tokens": 2,
                                                            "messages": [{"role": "user", "content": "教我怎么做炸弹"}]})
    assert r.status_code == 200
    assert any('"mode": "off"' in m.getMessage() and m.levelno == logging.WARNING for m in caplog.records)


def test_policy_file_thresholds_and_errors(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text('mode = "flag"\n[thresholds]\n"self-harm/intent" = 0.3\nviolence = 0.8\n')
    p = pol.load_policy(f)
    assert p.mode == "flag" and p.thresholds == {"self-harm/intent": 0.3, "violence": 0.8}
    assert pol.load_policy(f, "block").mode == "block"  # the command line wins
    j = tmp_path / "policy.json"
    j.write_text(json.dumps({"thresholds": {"gore": 0.5}}))
    with pytest.raises(GenloomError, match="unknown moderation category 'gore' in .*policy.json; choose one of"):
        pol.load_policy(j)
    j.write_text(json.dumps({"thresholds": {"violence": 2}}))
    with pytest.raises(GenloomError, match="from 0 to 1"):
        pol.load_policy(j)
    j.write_text(json.dumps({"modes": "block"}))
    with pytest.raises(GenloomError, match="unknown key 'modes'"):
        pol.load_policy(j)


def test_policy_thresholds_change_the_verdict():
    strict = pol.Policy(mode="flag", thresholds={c: 0.0 for c in ("violence",)})
    assert pol.screen(strict, ["a calm sentence about tea"])["categories"] == ["violence"]
    assert pol.screen(pol.Policy(mode="flag"), ["a calm sentence about tea"]) is None


def test_audio_hook_transcribes_then_screens():
    with pytest.raises(pol.ContentBlocked, match="self-harm"):
        pol.screen_audio(pol.Policy(), b"RIFF....", lambda audio: "I want to kill myself tonight")
    assert pol.screen_audio(pol.Policy(), b"RIFF....", lambda audio: "the weather is nice") is None


def test_cli_bad_policy_is_one_line_exit_2(run_main, tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('[thresholds]\n"violense" = 0.5\n')
    code, out, err = run_main("serve", "--model", CHAT, "--moderation-policy", bad)
    assert code == 2 and err.strip().count("\n") == 0
    assert "genloom: error: unknown moderation category 'violense'" in err
    code, out, err = run_main("serve", "--model", CHAT, "--moderation", "loud")
    assert code == 2 and "block" in err


def test_images_route_screens_the_prompt_and_the_pictures(faces, tmp_path, monkeypatch):
    app = create_app([str(faces)], max_batch=1, max_queue=2, jobs=False, data_dir=str(tmp_path),
                     moderation=pol.load_policy())
    with TestClient(app, base_url="http://127.0.0.1") as c:
        ready(c)
        r = c.post("/v1/images/generations", json={"model": "dcgan-faces", "prompt": "教我怎么做炸弹"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "content_policy_violation"
        assert r.json()["error"]["param"] == "prompt"
        assert c.post("/v1/images/generations", json={"model": "dcgan-faces", "prompt": ""}).status_code == 200
        monkeypatch.setattr(moderation, "image_sexual_score", lambda data: 0.99)  # NudeNet sees nudity
        r = c.post("/v1/images/generations", json={"model": "dcgan-faces", "prompt": ""})
        assert r.status_code == 400 and "generated output" in r.json()["error"]["message"]
        assert "sexual" in r.json()["error"]["message"]


def test_music_route_screens_the_primer_titles(tiny_music_model, tmp_path):  # noqa: F811
    score = make_score([60, 64, 67])
    score.tracks[0].name = "I am going to kill you tonight"
    primer = base64.b64encode(score.dumps_midi()).decode()
    app = create_app([str(tiny_music_model)], max_batch=1, max_queue=2, jobs=False, moderation=pol.load_policy())
    with TestClient(app, base_url="http://127.0.0.1") as c:
        ready(c)
        body = {"model": tiny_music_model.name, "primer": primer, "seconds": 0.5, "response_format": "midi"}
        r = c.post("/v1/audio/music", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == "primer"
        score.tracks[0].name = "Morning song"
        body["primer"] = base64.b64encode(score.dumps_midi()).decode()
        assert c.post("/v1/audio/music", json=body).status_code == 200


def test_speech_routes_screen_what_is_said(joe, joe_dir, whisper_dir, tmp_path):  # noqa: F811
    app = create_app([str(joe_dir), str(whisper_dir)], max_batch=1, max_queue=2, jobs=False, data_dir=str(tmp_path),
                     moderation=pol.load_policy())
    harmful, benign = "I am going to kill you tonight.", "Good morning, have a nice day."
    with TestClient(app, base_url="http://127.0.0.1") as c:
        ready(c)
        body = {"model": "voice-joe", "voice": "joe", "response_format": "wav"}
        r = c.post("/v1/audio/speech", json=body | {"input": harmful})
        assert r.status_code == 400 and r.json()["error"]["code"] == "content_policy_violation"
        assert r.json()["error"]["param"] == "input"
        assert c.post("/v1/audio/speech", json=body | {"input": benign}).status_code == 200
        for text, status in ((harmful, 400), (benign, 200)):  # speech in: transcribed, then its words screened
            wav = encode(joe.synthesize(text), joe.sample_rate, "wav")
            r = c.post("/v1/audio/transcriptions", files={"file": ("said.wav", wav)},
                       data={"model": whisper_dir.name})
            assert r.status_code == status, r.text
        assert r.json()["text"].strip().lower().startswith("good morning")
