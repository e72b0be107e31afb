"""Watermarks (genloom.safety.watermark): the installation key, the green-list text mark and its transformers parity,
the image and audio marks after their attacks, the hooks in generate / the engine / the pipelines, the CLI and API."""

import base64
import io
import string
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, assert_one_line_error, random_gpt
from PIL import Image

from genloom.data.tokenizers import CharTokenizer
from genloom.errors import GenloomError
from genloom.pipelines import music as music_pipe
from genloom.safety import watermark, watermark_audio, watermark_image
from genloom.safety.watermark_text import UNSEEDED, TextWatermark, green_ids, hash_key, score_ids
from genloom.sample import SamplingParams, generate, stream_ids
from genloom.serve.engine import TextEngine

KEY, OTHER = b"\x01" * 32, b"\x02" * 32
LETTERS = list(string.ascii_letters[:50])


# ---- the key ------------------------------------------------------------------------------------
def test_the_key_is_made_once_private_and_never_shown(tmp_path, monkeypatch):
    monkeypatch.delenv(watermark.KEY_ENV, raising=False)
    a = watermark.installation_key(tmp_path / "data")
    path = tmp_path / "data" / watermark.KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert watermark.installation_key(tmp_path / "data").raw == a.raw and len(a.raw) == 32
    assert a.raw.hex() not in repr(a) + str(a) + repr(watermark.Watermarks(a))
    assert str(hash_key(a.raw)) not in repr(TextWatermark(hash_key(a.raw), 50))
    assert [p.name for p in path.parent.iterdir()] == [watermark.KEY_FILE]  # no temporary file left behind
    other = tmp_path / "operator.key"
    other.write_text(OTHER.hex())
    other.chmod(0o600)
    monkeypatch.setenv(watermark.KEY_ENV, str(other))
    assert watermark.installation_key(tmp_path / "data").raw == OTHER
    other.write_text("not hex")
    with pytest.raises(GenloomError, match="not readable as hex"):
        watermark.installation_key(tmp_path / "data")
    with pytest.raises(GenloomError, match="choose one of on, off"):
        watermark.load(tmp_path, "maybe")


# ---- text ---------------------------------------------------------------------------------------
def test_green_lists_and_z_scores_equal_transformers():
    """transformers' WatermarkLogitsProcessor / WatermarkDetector (lefthash, context width 1) given hashing_key =
    hash_key(secret) draw the same green lists and give the same z-scores on the same token ids."""
    from transformers import GPT2Config, WatermarkDetector, WatermarkLogitsProcessor

    vocab, hk = 40, hash_key(KEY)
    ref = WatermarkLogitsProcessor(vocab_size=vocab, device="cpu", greenlist_ratio=0.25, bias=2.0, hashing_key=hk,
                                   seeding_scheme="lefthash", context_width=1)
    for prev in range(vocab):
        assert torch.equal(green_ids(hk, vocab, 0.25, prev), ref._get_greenlist_ids(torch.tensor([prev])))
    wm = TextWatermark(hk, vocab)
    ids = torch.randint(1, vocab, (3, 6), generator=torch.Generator().manual_seed(0))
    logits = torch.randn(3, vocab, generator=torch.Generator().manual_seed(1))
    proc = wm.processor()
    proc.observe(ids[:, -1])
    assert torch.equal(proc(None, logits), ref(ids, logits))
    proc.observe([0, 5, 0])  # after token 0 (seed 0 for every key) genloom adds nothing; transformers does
    out = proc(None, logits)
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2]) and not torch.equal(out[1], logits[1])
    config = GPT2Config(vocab_size=vocab, bos_token_id=vocab + 1)
    settings = {"greenlist_ratio": 0.25, "bias": 2.0, "hashing_key": hk, "seeding_scheme": "lefthash",
                "context_width": 1}
    rng = torch.Generator().manual_seed(2)
    seqs = [torch.randint(1, vocab, (120,), generator=rng).tolist(), [3, 4] * 30 + list(range(1, vocab))]
    for ignore in (True, False):
        det = WatermarkDetector(config, "cpu", settings, ignore_repeated_ngrams=ignore)
        for seq in seqs:
            out = det(torch.tensor([seq]), return_dict=True)
            ours = score_ids(seq, wm, ignore_repeated=ignore)
            assert ours["tokens_scored"] == out.num_tokens_scored[0]
            assert ours["z"] == pytest.approx(float(out.z_score[0]), abs=1e-3)
            assert ours["p_value"] == pytest.approx(float(out.p_value[0]), rel=1e-6, abs=1e-12)
    with_zero = seqs[0][:60] + [0, 7, 0, 9] + seqs[0][60:]  # the pairs after token 0 are not scored
    # (a, b) becomes (a, 0), (0, 7), (7, 0), (0, 9), (9, b): the two pairs after 0 are left out, so 3 - 1 more
    assert score_ids(with_zero, wm)["tokens_scored"] == score_ids(seqs[0], wm)["tokens_scored"] + 2


def _sample(model, wm, seed, n=200):
    sp = SamplingParams(max_new_tokens=n, temperature=1.0, seed=seed, stop_at_eot=False)
    procs = [wm.processor()] if wm is not None else []
    return [int(t[0]) for _, t in stream_ids(model, [[1, 2, 3]], sp, None, procs)]


@pytest.fixture(scope="module")
def text_model():
    return random_gpt("gpt2", vocab_size=64, block_size=256, seed=5)


def test_a_watermarked_sample_scores_high_and_others_do_not(text_model):
    wm, wrong = TextWatermark(hash_key(KEY), 64), TextWatermark(hash_key(OTHER), 64)
    marked, plain = _sample(text_model, wm, seed=1), _sample(text_model, None, seed=1)
    assert marked != plain
    assert score_ids(marked, wm)["z"] > 4 and score_ids(marked, wm)["detected"]
    assert abs(score_ids(plain, wm)["z"]) < 4 and not score_ids(plain, wm)["detected"]
    assert abs(score_ids(marked, wrong)["z"]) < 4


def test_the_processor_follows_rows_that_leave_the_batch(text_model):
    """A batch where rows stop early (end-of-text) keeps each row's previous token right: every row equals its
    solo run with the same seed."""
    wm = TextWatermark(hash_key(KEY), 64)
    sp = SamplingParams(max_new_tokens=30, temperature=1.0, seed=11)
    prompts = [[1, 2, 3], [7], [9, 9, 9, 9]]
    rows = {i: [] for i in range(3)}
    for r, t in stream_ids(text_model, prompts, sp, 5, [wm.processor()]):
        for i, tok in zip(r.tolist(), t.tolist()):
            rows[i].append(tok)
    assert any(5 in v and v.index(5) < 29 for v in rows.values())  # some row really left early
    for i, p in enumerate(prompts):
        solo = SamplingParams(max_new_tokens=30, temperature=1.0, seed=11 + i)
        assert [int(t[0]) for _, t in stream_ids(text_model, [p], solo, 5, [wm.processor()])] == rows[i]


def test_the_engine_marks_each_request_as_generate_does():
    model = random_gpt("gpt2", vocab_size=50, block_size=256, seed=4)
    tok = CharTokenizer(LETTERS)
    marks = watermark.Watermarks(watermark.Secret(KEY))
    sp = SamplingParams(max_new_tokens=150, temperature=1.0, seed=3)
    ref = generate(model, tok, ["abc"], sp, marks.processors(50))[0]
    engine = TextEngine(model, tok, max_batch=2, max_queue=4, watermarks=marks)
    engine.start()
    try:
        text, _ = engine.submit("abc", sp).result(timeout=60)
    finally:
        engine.stop()
    assert text == ref.text
    report = watermark.detect_bytes(text.encode(), marks.secret, tokenizer=tok, vocab=50)
    assert report["kind"] == "text" and report["z"] > 4
    plain = generate(model, tok, ["abc"], sp)[0].text
    assert watermark.detect_bytes(plain.encode(), marks.secret, tokenizer=tok, vocab=50)["z"] < 4


# ---- images -------------------------------------------------------------------------------------
def _jpeg(a, q=75):
    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(buf, "JPEG", quality=q)
    return watermark_image.read_image(buf.getvalue())


def _resize(a, f=0.5):
    im = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
    return np.asarray(im.resize((round(im.width * f), round(im.height * f)), Image.BICUBIC)).reshape(
        round(im.height * f), round(im.width * f), -1)


def _crop(a, top, left, keep=0.9):
    h, w = a.shape[:2]
    return a[top : top + round(h * keep), left : left + round(w * keep)]


@pytest.fixture(scope="module")
def pictures():
    """Four of scikit-image's sample pictures at 64x64 (the size of genloom's face GAN)."""
    from skimage import data

    return [np.asarray(Image.fromarray(f()).resize((64, 64), Image.BICUBIC))
            for f in (data.astronaut, data.chelsea, data.coffee, data.rocket)]


@pytest.fixture(scope="module")
def face(pictures):
    return pictures[0]


def test_the_image_mark_survives_jpeg_resize_and_crop(pictures):
    """Each attack leaves the mark readable in at least 3 of the 4 pictures; no unmarked picture and no other key
    reads as marked (bench/watermark.py measures the rates on generated images)."""
    attacks = {"none": lambda a: a, "jpeg75": _jpeg, "resize0.5": _resize, "crop10": lambda a: _crop(a, 0, 6),
               "crop10b": lambda a: _crop(a, 5, 1)}
    found = {name: 0 for name in attacks}
    for picture in pictures:
        marked = watermark_image.embed(picture, KEY)
        assert 10 * np.log10(255**2 / np.mean((marked.astype(float) - picture) ** 2)) > 28  # PSNR in dB
        for name, attack in attacks.items():
            found[name] += watermark_image.detect(attack(marked), KEY)["detected"]
            assert not watermark_image.detect(attack(marked), OTHER)["detected"]
        assert not watermark_image.detect(picture, KEY)["detected"]
        assert not watermark_image.detect(_jpeg(picture), KEY)["detected"]
    assert all(n >= 3 for n in found.values()), found


def test_the_images_pipeline_marks_what_it_encodes(face):
    from genloom.pipelines import images as pipe

    plan = pipe.ImagePlan.__new__(pipe.ImagePlan)
    pixels = torch.from_numpy(face.copy()).permute(2, 0, 1)[None].contiguous()
    marks = watermark.Watermarks(watermark.Secret(KEY))
    marked = pipe.ImageResult(plan, pixels.clone(), marks).images
    assert torch.equal(marked[0].permute(1, 2, 0), torch.from_numpy(watermark_image.embed(face, KEY)))
    assert not torch.equal(marked, pixels)
    assert torch.equal(pipe.ImageResult(plan, pixels.clone()).images, pixels)  # no watermarks given: untouched


# ---- audio --------------------------------------------------------------------------------------
def _tune(seconds=4.0, rate=22050):
    t = np.arange(int(seconds * rate)) / rate
    notes = 220 * 2 ** (np.floor(t * 4) % 8 / 12)  # eight notes a second apart by a semitone
    x = 0.3 * np.sin(2 * np.pi * notes * t) + 0.1 * np.sin(2 * np.pi * 3 * notes * t)
    x += 0.01 * np.random.default_rng(0).standard_normal(len(t))
    return np.stack([x, 0.8 * x], axis=1), rate


def test_the_audio_mark_survives_mp3_at_64_kbits():
    x, rate = _tune()
    wav = watermark_audio.wav_bytes(x, rate)
    marked = watermark.mark_wav(wav, watermark.Watermarks(watermark.Secret(KEY)))
    y, _ = watermark_audio.read_audio(marked)
    assert 10 * np.log10(np.sum(x**2) / np.sum((y - x) ** 2)) > 35  # the mark is 40 dB under the audio
    mp3 = music_pipe.wav_to_mp3(marked, kbps=64)
    report = watermark.detect_bytes(mp3, watermark.Secret(KEY))
    assert report["kind"] == "audio" and report["detected"], report
    assert not watermark.detect_bytes(mp3, watermark.Secret(OTHER))["detected"]
    assert not watermark.detect_bytes(music_pipe.wav_to_mp3(wav, kbps=64), watermark.Secret(KEY))["detected"]
    int16 = (x * 32767).astype(np.int16)[:, 0]  # what a speech route hands over: (n,) int16
    out = watermark.mark_audio(int16, rate, watermark.Watermarks(watermark.Secret(KEY)))
    assert out.dtype == np.int16 and out.shape == int16.shape and watermark_audio.detect(out, rate, KEY)["detected"]


def test_a_clip_marked_in_pieces_carries_one_sequence():
    """Speech streams sentence by sentence: each piece marked from where the one before it ended reads, joined, as one
    mark (each piece restarting the sequence read at z 2-6 on two sentences of speech: a sixth of keys missed)."""
    x, rate = _tune(seconds=3.0)
    mono = x[:, 0]
    cuts = [0, 9_000, 30_000, len(mono)]  # three pieces of unequal length
    whole = watermark_audio.chips(KEY, len(mono), rate)
    seq = watermark_audio.ChipStream(KEY, rate)
    pieces = np.concatenate([seq.take(b - a) for a, b in zip(cuts, cuts[1:])])
    assert np.corrcoef(whole, pieces)[0, 1] > 0.9999  # the same sequence (each piece scaled to unit RMS)
    marks = watermark.Watermarks(watermark.Secret(KEY))
    stream = watermark.audio_stream(marks, rate)
    joined = np.concatenate([watermark.mark_audio(mono[a:b], rate, marks, stream) for a, b in zip(cuts, cuts[1:])])
    at_once = watermark_audio.detect(watermark.mark_audio(mono, rate, marks), rate, KEY)["z"]
    report = watermark_audio.detect(joined, rate, KEY)
    assert report["detected"] and report["lag_samples"] == 0 and report["z"] > 0.9 * at_once
    restarted = np.concatenate([watermark.mark_audio(mono[a:b], rate, marks) for a, b in zip(cuts, cuts[1:])])
    assert watermark_audio.detect(restarted, rate, KEY)["z"] < 0.8 * report["z"]  # what the stream is for


def test_the_kind_of_a_file_is_told_by_its_content():
    assert watermark.kind_of(b"\x89PNG\r\n") == "image" and watermark.kind_of(b"RIFF\0\0\0\0WAVEfmt ") == "audio"
    assert watermark.kind_of("一段文字".encode()) == "text"
    with pytest.raises(GenloomError, match="not an image"):
        watermark.kind_of(b"\x00\xff\xfe\x80")


# ---- the doors ----------------------------------------------------------------------------------
KJV = ROOT / "models" / "kjv"


@pytest.fixture
def fixed_key(tmp_path, monkeypatch):
    """The operator's key KEY (GENLOOM_WATERMARK_KEY_FILE): the doors' outputs are the same on every run."""
    path = tmp_path / "operator.key"
    path.write_text(KEY.hex())
    path.chmod(0o600)
    monkeypatch.setenv(watermark.KEY_ENV, str(path))
    return watermark.Secret(KEY)


def test_generate_marks_text_and_detect_reads_it(run_main, tmp_path, caplog, fixed_key):
    data = tmp_path / "data"
    code, out, err = run_main("generate", "-m", KJV, "-p", "And God said", "-N", "120", "--seed", "1",
                              "--data-dir", data, "--no-stream")
    assert code == 0, err
    (tmp_path / "marked.txt").write_text(out.split("\n", 1)[1])
    code, out, err = run_main("watermark", "detect", tmp_path / "marked.txt", "-m", KJV, "--data-dir", data, "--json")
    assert code == 0, err
    import json
    report = json.loads(out)
    assert report["detected"] and report["z"] > 4 and report["ignore_repeated"]
    code, out, err = run_main("generate", "-m", KJV, "-p", "And God said", "-N", "120", "--seed", "1",
                              "--data-dir", data, "--no-stream", "--watermark", "off")
    assert code == 0 and "watermarks are OFF" in caplog.text  # logged at start-up (stderr in a shell)
    (tmp_path / "plain.txt").write_text(out.split("\n", 1)[1])
    code, out, err = run_main("watermark", "detect", tmp_path / "plain.txt", "-m", KJV, "--data-dir", data)
    assert code == 0 and "no watermark found" in out
    assert_one_line_error(*run_main("watermark", "detect", tmp_path / "plain.txt", "--data-dir", data))
    assert_one_line_error(*run_main("watermark", "detect", tmp_path / "missing.txt", "--data-dir", data))


def test_the_detect_route(tmp_path, face, fixed_key):
    from fastapi.testclient import TestClient

    from genloom.serve.app import create_app

    app = create_app([str(KJV), str(ROOT / "models" / "fmnist-dcgan")], data_dir=str(tmp_path), jobs=False,
                     max_batch=1)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        for _ in range(300):  # the model loads in the background
            if c.get("/health").status_code == 200:
                break
            time.sleep(0.1)
        r = c.post("/v1/completions", json={"model": "kjv", "prompt": "And God said", "max_tokens": 120, "seed": 1,
                                            "temperature": 1.0})
        assert r.status_code == 200, r.text
        text = r.json()["choices"][0]["text"]
        r = c.post("/v1/watermarks/detect", json={"model": "kjv", "text": "And God said" + text})
        assert r.status_code == 200 and r.json()["detected"] and r.json()["kind"] == "text", r.text
        secret = watermark.installation_key(tmp_path)
        assert secret.raw == KEY and not (tmp_path / watermark.KEY_FILE).exists()  # the operator's key serves
        png = io.BytesIO()
        Image.fromarray(watermark_image.embed(face, secret.raw)).save(png, "PNG")
        r = c.post("/v1/watermarks/detect", json={"file": base64.b64encode(png.getvalue()).decode()})
        assert r.status_code == 200 and r.json()["detected"] and r.json()["kind"] == "image", r.text
        r = c.post("/v1/images/generations", json={"model": "fmnist-dcgan", "prompt": "", "n": 1,
                                                   "response_format": "b64_json", "seed": 2})
        assert r.status_code == 200, r.text
        r = c.post("/v1/watermarks/detect", json={"file": r.json()["data"][0]["b64_json"]})
        assert r.status_code == 200 and r.json()["detected"], r.text  # the images route marks what it sends
        r = c.post("/v1/watermarks/detect", json={"file": base64.b64encode(b"plain words").decode()})
        assert r.status_code == 400 and r.json()["error"]["param"] == "file"
        r = c.post("/v1/watermarks/detect", json={"text": "x"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
        r = c.post("/v1/watermarks/detect", json={"text": "x", "model": "kjv", "file": "eA=="})
        assert r.status_code == 400


def test_images_and_music_the_cli_writes_are_marked(run_main, tmp_path, fixed_key):
    data, out = tmp_path / "data", tmp_path / "out"
    code, _, err = run_main("generate", "-m", ROOT / "models" / "fmnist-dcgan", "-n", "2", "--seed", "3", "--out", out,
                            "--data-dir", data)
    assert code == 0, err
    pngs = sorted(out.glob("3-00*.png"))
    assert len(pngs) == 2
    for png in pngs:
        code, text, err = run_main("watermark", "detect", png, "--data-dir", data)
        assert code == 0 and ": image: watermarked" in text, text + err
    code, _, err = run_main("generate", "-m", ROOT / "models" / "fmnist-dcgan", "-n", "1", "--seed", "3", "--out",
                            tmp_path / "plain", "--data-dir", data, "--watermark", "off")
    assert code == 0, err
    code, text, _ = run_main("watermark", "detect", tmp_path / "plain" / "3-000.png", "--data-dir", data)
    assert "no watermark found" in text
    code, _, err = run_main("generate", "-m", ROOT / "models" / "chorales", "--bars", "2", "--seed", "1", "--out", out,
                            "--data-dir", data, "--mp3")
    assert code == 0, err
    for audio in ("music-1.wav", "music-1.mp3"):
        code, text, err = run_main("watermark", "detect", out / audio, "--data-dir", data)
        assert code == 0 and ": audio: watermarked" in text, text + err


def test_a_server_with_watermarks_off_says_so_and_marks_nothing(tmp_path, caplog):
    from fastapi.testclient import TestClient

    from genloom.serve.app import create_app

    app = create_app([str(ROOT / "models" / "fmnist-dcgan")], data_dir=str(tmp_path), jobs=False, watermark="off")
    assert "watermarks are OFF" in caplog.text
    with TestClient(app, base_url="http://127.0.0.1") as c:
        for _ in range(300):
            if c.get("/health").status_code == 200:
                break
            time.sleep(0.1)
        r = c.post("/v1/watermarks/detect", json={"file": base64.b64encode(b"\x89PNG").decode()})
        assert r.status_code == 400 and r.json()["error"]["code"] == "watermarks_off"
        r = c.post("/v1/images/generations", json={"model": "fmnist-dcgan", "prompt": "", "n": 1,
                                                   "response_format": "b64_json", "seed": 2})
        assert r.status_code == 200, r.text
        png = base64.b64decode(r.json()["data"][0]["b64_json"])
    assert not (tmp_path / watermark.KEY_FILE).exists()
    assert not watermark.detect_bytes(png, watermark.installation_key(tmp_path))["detected"]


def test_the_engine_marks_a_batch_of_greedy_and_sampled_rows_as_generate_marks_each():
    """The engine applies one green-list processor to all its rows at once; each row must still get its own previous
    token's green list: staggered joins, greedy and sampled rows, equal to generate() alone with the mark."""
    model = random_gpt("gpt2", vocab_size=50, block_size=256, seed=4)
    tok = CharTokenizer(LETTERS)
    marks = watermark.Watermarks(watermark.Secret(KEY))
    params = [SamplingParams(max_new_tokens=40, temperature=0.0), SamplingParams(max_new_tokens=25, temperature=1.0, seed=3),
              SamplingParams(max_new_tokens=33, temperature=0.0, repetition_penalty=1.3),
              SamplingParams(max_new_tokens=30, temperature=0.0, min_new_tokens=30)]
    prompts = ["abc", "hello", "xyzzy", "Q"]
    ref = [generate(model, tok, [p], sp, marks.processors(50))[0].text for p, sp in zip(prompts, params)]
    assert ref[0] != generate(model, tok, [prompts[0]], params[0])[0].text  # the mark changes greedy text here
    engine = TextEngine(model, tok, max_batch=3, max_queue=4, watermarks=marks)
    handles = []
    for p, sp in zip(prompts, params):
        handles.append(engine.submit(p, sp))
        for _ in range(4):
            engine.step()
    while not all(h.finished for h in handles):
        engine.step()
    assert [h.result(timeout=1)[0] for h in handles] == ref


def test_a_batch_is_marked_as_each_row_alone():
    """The processor's one indexed write for a batch adds the same green lists as row by row (the unseeded token's
    row untouched, repeated previous tokens, one row, no row marked)."""
    wm = TextWatermark(987654321, 300)
    logits = torch.randn(6, 300)
    prev = [5, UNSEEDED, 17, 5, 299, 1]
    batch = wm.processor()
    batch.observe(prev)
    got = batch(None, logits)
    for i, p in enumerate(prev):
        one = wm.processor()
        one.observe([p])
        assert torch.equal(got[i : i + 1], one(None, logits[i : i + 1]))
    assert torch.equal(got[1], logits[1]) and not torch.equal(got[0], logits[0])
    none = wm.processor()
    none.observe([UNSEEDED, UNSEEDED])
    assert torch.equal(none(None, logits[:2]), logits[:2])
