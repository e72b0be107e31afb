"""GB 45438-2025 labels and C2PA manifests on every output: written by genloom, read back by independent readers
(exiftool, raw bytes, YAML, the C2PA Reader), tampering caught, bad input one line / a 4xx."""

from __future__ import annotations

import errno
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import time
import wave
from pathlib import Path
from urllib.parse import urlsplit

import lameenc
import mido
import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import ROOT, assert_one_line_error
from fastapi.testclient import TestClient
from PIL import Image
from test_api_text import Server
from test_music_generate import tiny_music_model  # noqa: F401  (a fixture)
from test_ui import browser_page, shot

from genloom import files
from genloom.errors import GenloomError
from genloom.safety import keys, labels, manifests, marks, provenance
from genloom.serve.app import create_app

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool missing: apt-get install libimage-exiftool-perl")
DCGAN = str(ROOT / "models" / "fmnist-dcgan")
CHAT = str(ROOT / "models" / "chat")
META = labels.OutputMeta("gl-test-0001", model="m", parameters={"seed": 3})


@pytest.fixture(scope="module")
def ident():
    return keys.make_chain()


def _png(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _image(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(_png())).save(buf, {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}[fmt])
    return buf.getvalue()


def _audio(fmt: str) -> bytes:
    x = (0.2 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    buf = io.BytesIO()
    if fmt == "wav":
        with wave.open(buf, "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
            w.writeframes((x * 32767).astype("<i2").tobytes())
    elif fmt == "mp3":
        enc = lameenc.Encoder()
        enc.set_bit_rate(64), enc.set_in_sample_rate(8000), enc.set_channels(1)
        return bytes(enc.encode((x * 32767).astype("<i2").tobytes()) + enc.flush())
    else:
        sf.write(buf, x, 8000, **({"format": "FLAC"} if fmt == "flac" else {"format": "OGG", "subtype": "VORBIS"}))
    return buf.getvalue()


def _exif_aigc(path: Path) -> dict:
    """The AIGC record as exiftool reads it (XMP-TC260:AIGC, ID3 TXXX, Vorbis comment)."""
    out = json.loads(subprocess.run([EXIFTOOL, "-j", "-a", "-G1", str(path)], capture_output=True, text=True,
                                    check=True).stdout)[0]
    vals = [v for k, v in out.items() if k.lower().endswith(":aigc") or (k.endswith("UserDefinedText") and
                                                                         str(v).startswith("(AIGC)"))]
    assert vals, f"exiftool found no AIGC label in {path.name}: {sorted(out)}"
    return json.loads(str(vals[0]).removeprefix("(AIGC) "))


@needs_exiftool
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "wav", "mp3", "flac", "ogg"])
def test_implicit_label_read_back_by_exiftool(fmt, tmp_path):
    data = _image(fmt) if fmt in labels.IMAGE_FORMATS else _audio(fmt)
    assert labels.detect_format(data) == fmt and labels.read_label(data, fmt) is None
    out = labels.label_bytes(data, fmt, META, labels.Labeler(labels.LabelPolicy(visible_mark=False)))
    path = tmp_path / f"x.{fmt}"
    path.write_bytes(out)
    rec = _exif_aigc(path)
    assert list(rec) == list(labels.FIELDS) and rec["Label"] == "1" and rec["ProduceID"] == "gl-test-0001"
    assert rec["ReservedCode1"] == "sha256:" + labels.parameters_hash({"seed": 3})
    if fmt in ("png", "webp"):  # lossless: the pixels are untouched
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(out))), np.asarray(Image.open(io.BytesIO(data))))
    if fmt == "jpeg":  # the APP1 segment is spliced in: the entropy-coded data is byte-identical
        assert out.endswith(data[data.index(b"\xff\xdb"):])


def test_midi_label_is_a_text_meta_event_and_text_gets_front_matter():
    mid = mido.MidiFile()
    mid.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, time=0),
                                      mido.Message("note_off", note=60, time=480)]))
    buf = io.BytesIO()
    mid.save(file=buf)
    out = labels.label_bytes(buf.getvalue(), "midi", META, labels.Labeler())
    start = out.index(b"\xff\x01")  # raw bytes: meta event FF 01, a variable-length length, the text
    n, i = 0, start + 2
    while True:
        n, i = (n << 7) | (out[i] & 0x7F), i + 1
        if not out[i - 1] & 0x80:
            break
    text = out[i:i + n].decode("ascii")
    assert text.startswith("AIGC ") and json.loads(text[5:])["ProduceID"] == "gl-test-0001"
    md = labels.label_bytes("# 诗\n床前明月光\n".encode(), "text", META, labels.Labeler()).decode()
    front = md.split("---\n")[1]
    assert yaml.safe_load(front)["aigc"]["ProduceID"] == "gl-test-0001" and md.endswith("床前明月光\n")


def test_visible_mark_is_at_least_5_percent_and_goes_where_asked():
    img = Image.new("RGB", (400, 200), (255, 255, 255))
    for pos, (ys, xs) in {"bottom-right": (slice(150, 200), slice(300, 400)),
                          "top-left": (slice(0, 50), slice(0, 100))}.items():
        a = np.asarray(marks.visible_mark(img, "AI生成", pos)).astype(int)
        dark = (a.sum(axis=2) < 600)
        rows = np.where(dark.any(axis=1))[0]
        assert dark[ys, xs].sum() == dark.sum() > 0, pos  # every marked pixel in the chosen corner
        assert rows.max() - rows.min() + 1 >= 0.05 * 200  # the mark is at least 5% of the shorter side tall
    assert marks.mark_height(28, 28) >= 0.05 * 28 and marks.mark_height(1024, 512) == 26


def test_missing_cjk_font_names_the_package(monkeypatch):
    monkeypatch.setattr(marks, "FONT_PATHS", ("/nonexistent.ttc",))
    monkeypatch.setattr(marks.shutil, "which", lambda name: None)
    with pytest.raises(GenloomError, match="fonts-wqy-microhei"):
        labels.label_bytes(_png(), "png", META, labels.Labeler())


def test_tone_cue_prepends_a_beep():
    wav = _audio("wav")
    out = marks.add_tone_cue_wav(wav)
    with wave.open(io.BytesIO(out)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    cue = len(marks.tone_cue(8000))
    spectrum = np.abs(np.fft.rfft(pcm[:cue // 3]))
    assert len(pcm) == 8000 + cue and abs(np.argmax(spectrum) * 8000 / (cue // 3) - 880) < 30


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "wav", "mp3", "flac"])
def test_c2pa_manifest_validates_and_tampering_fails(fmt, ident):
    data = _image(fmt) if fmt in labels.IMAGE_FORMATS else _audio(fmt)
    out = labels.label_bytes(data, fmt, META, labels.Labeler(labels.LabelPolicy(), ident))
    m = manifests.read(out, fmt, ident.root)
    assert m["state"] == "Trusted" and not m["failures"], m
    act = m["actions"][0]
    assert act["action"] == "c2pa.created" and act["digitalSourceType"] == manifests.DIGITAL_SOURCE_TYPE
    assert act["parameters"]["model"] == "m" and act["parameters"]["parameters_sha256"] == labels.parameters_hash(
        {"seed": 3})
    assert labels.read_label(out, fmt)["ProduceID"] == "gl-test-0001"  # signing kept the implicit label
    assert manifests.read(out, fmt)["state"] == "Valid"  # no trust anchor: signature and hashes still check
    tampered = bytearray(out)  # one byte of the pixels / samples flipped
    marker = {"png": b"IDAT", "jpeg": b"\xff\xda", "webp": b"VP8L", "wav": b"data"}.get(fmt)
    tampered[out.rindex(marker) + 30 if marker else -100] ^= 0xFF  # mp3, flac: audio frames end the file
    assert manifests.read(bytes(tampered), fmt, ident.root)["state"] == "Invalid"


def test_signing_chain_files_and_bad_identities(tmp_path, ident):
    folder = keys.init_keys(tmp_path)
    assert oct(os.stat(folder / keys.KEY_NAME).st_mode & 0o777) == "0o600"
    with pytest.raises(GenloomError, match="--force"):
        keys.init_keys(tmp_path)
    assert keys.load_identity(tmp_path).root == (folder / keys.ROOT_NAME).read_bytes()
    # a self-signed leaf (the root alone) is refused before c2pa would reject it
    (tmp_path / "self.pem").write_bytes(ident.root)
    with pytest.raises(GenloomError, match="self-signed"):
        keys.load_identity(cert=str(tmp_path / "self.pem"), key=str(folder / keys.KEY_NAME))
    other = keys.make_chain()
    (tmp_path / "other.pem").write_bytes(other.chain)
    with pytest.raises(GenloomError, match="not the private key"):
        keys.load_identity(cert=str(tmp_path / "other.pem"), key=str(folder / keys.KEY_NAME))
    with pytest.raises(GenloomError, match="genloom signing init"):
        labels.make_labeler(labels.LabelPolicy(c2pa="on"), tmp_path / "empty")
    assert labels.make_labeler(labels.LabelPolicy(), tmp_path / "empty").identity is None  # auto: none, unsigned
    assert labels.make_labeler(labels.LabelPolicy(), tmp_path).identity is not None  # auto: the installation's
    assert labels.make_labeler(labels.LabelPolicy(), None).identity is None  # no data directory: never the cwd's


def _ensure_after(barrier, data, made):
    barrier.wait()
    made.put(keys.ensure_keys(data))


def test_servers_starting_together_make_one_signing_chain(tmp_path):
    """Replicas on one data directory make the chain on first use at the same moment (CI saw two of them
    write a key of one chain beside the certificate of another): one makes it, every one then loads it."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(4):
        data = tmp_path / str(round_)
        barrier, made = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_ensure_after, args=(barrier, data, made)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6
        assert sorted(made.get(timeout=5) for _ in procs) == [False] * 5 + [True]
        ident = keys.load_identity(data)  # raises when the key is not the chain's
        assert ident.root == (keys.keys_dir(data) / keys.ROOT_NAME).read_bytes()
        assert keys.ensure_keys(data) is False


def test_a_chain_in_a_folder_this_process_cannot_write_still_loads(tmp_path, monkeypatch):
    """Readers take a shared lock; where the lock file cannot be made (a read-only mount, another user's folder)
    they read unlocked instead of failing; a writer there still gets the error."""
    keys.init_keys(tmp_path)
    real = open

    def read_only(path, mode="r", *a, **k):
        if str(path).endswith(keys.LOCK_NAME):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, mode, *a, **k)

    monkeypatch.setattr(files, "open", read_only, raising=False)
    assert keys.load_identity(tmp_path).root == (keys.keys_dir(tmp_path) / keys.ROOT_NAME).read_bytes()
    with pytest.raises(OSError, match="Read-only"):
        keys.init_keys(tmp_path, force=True)


def test_provenance_report_sections_and_registry(ident):
    out = labels.label_bytes(_png(), "png", META, labels.Labeler(labels.LabelPolicy(), ident))
    rep = provenance.report(out, "x.png", trust_anchor=ident.root)
    names = [s.name for s in rep.sections]
    assert names == ["GB 45438 implicit label", "C2PA manifest", "genloom watermark"]
    assert all(s.found for s in rep.sections[:2]) and not rep.sections[2].found  # no key given: not checked
    assert "gl-test-0001" in rep.text() and "Trusted" in rep.text()

    def wm(data, fmt):
        return provenance.Section("watermark", False, "none found")
    provenance.register(wm)
    try:
        assert provenance.report(out, "x.png").to_dict()["sections"][-1]["name"] == "watermark"
    finally:
        provenance.SECTIONS.remove(wm)
    with pytest.raises(GenloomError, match="not an image"):
        provenance.report(b"\x00\x01\x02 binary junk", "x.bin")


def test_cli_generate_labels_logs_and_provenance_reads(tmp_path, run_main, monkeypatch):
    monkeypatch.delenv("GENLOOM_WATERMARK_KEY_FILE")  # each data directory its own installation key
    code, out, err = run_main("signing", "init", "--data-dir", tmp_path / "d")
    assert code == 0, err
    code, out, err = run_main("generate", "-m", DCGAN, "-n", 2, "--seed", 4, "--out", tmp_path / "o",
                              "--data-dir", tmp_path / "d", "--mark-position", "top-left")
    assert code == 0, err
    log = [json.loads(ln) for ln in (tmp_path / "o" / "aigc-log.jsonl").read_text().splitlines()]
    assert [r["file"] for r in log] == ["4-000.png", "4-001.png", "4-grid.png"] and len({r["ProduceID"] for r in log}) == 3
    code, out, err = run_main("provenance", tmp_path / "o" / "4-001.png", "--json", "--data-dir", tmp_path / "d")
    rep = json.loads(out)
    label, c2pa = rep["sections"][0], rep["sections"][1]
    assert label["details"]["aigc"]["ProduceID"] == log[1]["ProduceID"]  # traceable to the sidecar record
    assert c2pa["found"] and c2pa["details"]["state"] == "Trusted"
    mark = rep["sections"][2]
    assert mark["name"] == "genloom watermark" and mark["found"] and mark["details"]["z"] > 4  # read with the key
    code, out, err = run_main("provenance", tmp_path / "o" / "4-001.png", "--json", "--data-dir", tmp_path / "other")
    assert not json.loads(out)["sections"][2]["found"]  # another installation (no key) finds no mark
    code, out, err = run_main("provenance", tmp_path / "o" / "4-001.png")
    assert code == 0 and "GB 45438 implicit label: AI-generated" in out
    # switched off: no label, no mark, and a warning
    code, out, err = run_main("generate", "-m", DCGAN, "--seed", 4, "--out", tmp_path / "off",
                              "--no-implicit-labels", "--no-visible-mark", "--c2pa", "off")
    assert code == 0 and "warning: implicit labels switched off" in err
    off = (tmp_path / "off" / "4-000.png").read_bytes()
    assert labels.read_label(off, "png") is None
    on = Image.open(tmp_path / "o" / "4-000.png")
    assert not np.array_equal(np.asarray(Image.open(io.BytesIO(off))), np.asarray(on))  # the mark changed pixels


def test_cli_bad_input_is_one_line(tmp_path, run_main):
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)))
    assert "not an image" in assert_one_line_error(*run_main("provenance", tmp_path / "junk.bin"))
    assert "no such file" in assert_one_line_error(*run_main("provenance", tmp_path / "nope.png"))
    line = assert_one_line_error(*run_main("generate", "-m", DCGAN, "--c2pa", "on", "--data-dir", tmp_path / "nd",
                                           "--out", tmp_path / "o"))
    assert "genloom signing init" in line
    line = assert_one_line_error(*run_main("generate", "-m", DCGAN, "--mark-position", "middle"))
    assert "bottom-right" in line


def test_cli_text_saved_with_front_matter_and_notice(tmp_path, run_main):
    out = tmp_path / "x.md"
    code, _, err = run_main("generate", "-m", CHAT, "-p", "User: hi\nBot:", "-N", 8, "--seed", 1, "--out", out,
                            "--text-notice")
    assert code == 0, err
    text = out.read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---\n")[1])["aigc"]
    assert front["Label"] == "1" and marks.TEXT_NOTICE in text
    assert json.loads((tmp_path / "aigc-log.jsonl").read_text())["ProduceID"] == front["ProduceID"]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    data = tmp_path_factory.mktemp("prov-data")
    keys.init_keys(data)
    app = create_app([DCGAN, CHAT], data_dir=str(data), jobs=False, max_tokens=16)
    app.state.max_provenance_bytes = 200_000
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield _ready(c)


def test_api_outputs_carry_labels_traceable_to_history(api):
    r = api.post("/v1/images/generations", json={"model": "fmnist-dcgan", "n": 1, "seed": 2,
                                                  "response_format": "url"})
    assert r.status_code == 200, r.text
    item = r.json()["data"][0]
    png = api.get(urlsplit(item["url"]).path).content
    rep = api.post("/v1/provenance", files={"file": ("img.png", png, "image/png")}).json()
    assert rep["sections"][0]["details"]["aigc"]["ProduceID"] == item["aigc"]["ProduceID"]
    assert rep["sections"][1]["details"]["state"] == "Trusted"  # the server's own root is the anchor
    assert rep["sections"][2]["name"] == "genloom watermark" and rep["sections"][2]["found"]  # the server's key
    chat = api.post("/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "hi"}],
                                                   "max_tokens": 4}).json()
    assert chat["aigc"]["ProduceID"] == chat["id"] and chat["aigc"]["Label"] == "1"
    hist = api.get("/ui/api/history").json()["data"]
    assert any(h["output"].get("produce_id") == chat["id"] for h in hist)
    assert any(item["aigc"]["ProduceID"] in h["output"].get("images", []) for h in hist)


def test_api_provenance_bad_input(api):
    r = api.post("/v1/provenance", files={"file": ("x.bin", bytes(range(256)) * 4, "application/octet-stream")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = api.post("/v1/provenance", files={"file": ("big.txt", b"a" * 300_000, "text/plain")})
    assert r.status_code == 413
    r = api.post("/v1/provenance", json={"file": "x"})
    assert r.status_code == 400
    r = api.post("/v1/provenance", files={"other": ("a.txt", b"hi", "text/plain")})
    assert r.status_code == 400 and "file" in r.json()["error"]["message"]


def test_ui_provenance_tab_reports_a_dropped_file(tmp_path):
    data = tmp_path / "data"
    ident_dir = keys.init_keys(data)
    png = labels.label_bytes(_png((96, 96)), "png", META,
                             labels.Labeler(labels.LabelPolicy(), keys.load_identity(data)))
    (tmp_path / "made.png").write_bytes(png)
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)))
    assert (ident_dir / keys.ROOT_NAME).is_file()
    s = Server(create_app([DCGAN], data_dir=str(data), jobs=False))
    try:
        with browser_page(f"{s.url}/ui/") as page:
            page.click("nav button[data-tab=provenance]")
            page.set_input_files("#prov-file", str(tmp_path / "made.png"))
            page.wait_for_selector("#prov-table tbody tr")
            rows = page.inner_text("#prov-table tbody")
            assert "AI-generated" in rows and "gl-test-0001" in rows and "Trusted" in rows
            assert "made.png: image (png" in page.inner_text("#prov-title")
            shot(page, "provenance")
            page.set_input_files("#prov-file", str(tmp_path / "junk.bin"))
            page.wait_for_selector("#error:not([hidden])")
            assert "not an image" in page.inner_text("#error")
    finally:
        s.close()


def _ready(c: TestClient) -> TestClient:
    for _ in range(600):  # models load in the lifespan, in the background
        if c.get("/health").status_code == 200:
            return c
        time.sleep(0.05)
    raise AssertionError("models did not load")


def test_api_text_notice_and_stream_label_when_switched_on():
    app = create_app([CHAT], max_tokens=8, labeler=labels.Labeler(labels.LabelPolicy(text_notice=True)))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        _ready(c)
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        r = c.post("/v1/chat/completions", json=body).json()
        assert r["choices"][0]["message"]["content"].startswith(marks.TEXT_NOTICE) and r["aigc"]["Label"] == "1"
        with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            first = json.loads(next(ln for ln in s.iter_lines() if ln.startswith("data: "))[6:])
        assert first["aigc"]["ProduceID"] == first["id"] and first["choices"][0]["delta"]["content"].startswith(
            marks.TEXT_NOTICE)
        r = c.post("/v1/completions", json={"model": "chat", "prompt": "User: hi\nBot:", "max_tokens": 4}).json()
        assert r["choices"][0]["text"].startswith(marks.TEXT_NOTICE) and r["aigc"]["ProduceID"] == r["id"]


def test_cli_music_files_labelled_and_audio_cue(tiny_music_model, tmp_path, run_main):  # noqa: F811
    frames = {}
    for cue in ("--no-audio-cue", "--audio-cue"):
        code, _, err = run_main("generate", "-m", tiny_music_model, "--seconds", 1, "--seed", 4, "--mp3", "--out",
                                tmp_path / cue, cue)
        assert code == 0, err
        for suffix, fmt in ((".mid", "midi"), (".wav", "wav"), (".mp3", "mp3"), (".png", "png")):
            assert labels.read_label((tmp_path / cue / f"music-4{suffix}").read_bytes(), fmt)["Label"] == "1", suffix
        with wave.open(str(tmp_path / cue / "music-4.wav")) as w:
            frames[cue], rate = w.getnframes(), w.getframerate()
    assert frames["--audio-cue"] - frames["--no-audio-cue"] == len(marks.tone_cue(rate))


@needs_exiftool
@pytest.mark.parametrize("fmt", ["png", "jpeg"])  # Debian 12's exiftool 12.57 reads C2PA in these, not WAV/WebP
def test_c2pa_manifest_read_by_exiftool(fmt, ident, tmp_path):
    data = _image(fmt) if fmt in labels.IMAGE_FORMATS else _audio(fmt)
    path = tmp_path / f"x.{fmt}"
    path.write_bytes(labels.label_bytes(data, fmt, META, labels.Labeler(labels.LabelPolicy(), ident)))
    tags = json.loads(subprocess.run([EXIFTOOL, "-j", "-G1", "-a", str(path)], capture_output=True, text=True,
                                     check=True).stdout)[0]
    assert tags["CBOR:ActionsAction"] == "c2pa.created"  # exiftool's own JUMBF/CBOR parser, not c2pa-rs
    assert tags["CBOR:ActionsDigitalSourceType"] == manifests.DIGITAL_SOURCE_TYPE
    assert tags["CBOR:ActionsParametersParameters_Sha256"] == labels.parameters_hash({"seed": 3})


@pytest.mark.parametrize("data, fmt", [(b"MThd\x00\x00\x00\x06garbage", "midi"), (b"fLaC" + bytes(40), "flac"),
                                       (b"OggS" + bytes(40), "ogg"), (b"\x89PNG\r\n\x1a\n" + bytes(20), "png"),
                                       (b"abc", "tiff")])
def test_a_label_that_cannot_be_written_is_an_error(data, fmt):
    with pytest.raises(GenloomError):
        labels.label_bytes(data, fmt, META, labels.Labeler(labels.LabelPolicy(visible_mark=False)))


def test_cli_makes_the_installation_chain_on_first_use(tmp_path, run_main):
    code, out, err = run_main("generate", "-m", DCGAN, "--seed", 3, "--out", tmp_path / "o", "--data-dir", tmp_path / "d")
    assert code == 0, err
    key = keys.keys_dir(tmp_path / "d") / keys.KEY_NAME
    assert key.stat().st_mode & 0o777 == 0o600
    made = key.read_bytes()
    rep = provenance.report((tmp_path / "o" / "3-000.png").read_bytes(), "x.png",
                            trust_anchor=(keys.keys_dir(tmp_path / "d") / keys.ROOT_NAME).read_bytes())
    assert rep.sections[1].found and rep.sections[1].details["state"] == "Trusted"
    code, out, err = run_main("generate", "-m", DCGAN, "--seed", 3, "--out", tmp_path / "o2", "--data-dir", tmp_path / "d")
    assert code == 0 and key.read_bytes() == made  # made once, then reused
