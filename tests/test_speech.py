"""The speech runner: Piper's espeak-ng front end (clauses, punctuation, ids) and the joe voice on onnxruntime."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import soundfile as sf
from conftest import assert_one_line_error

from genloom.errors import GenloomError
from genloom.importers import import_voice
from genloom.pipelines import speech
from genloom.safety import labels, watermark


@pytest.fixture(scope="session")
def joe_dir(tmp_path_factory):
    return import_voice("joe", str(tmp_path_factory.mktemp("voices") / "voice-joe"))


@pytest.fixture(scope="session")
def joe(joe_dir):
    return speech.load_voice(joe_dir)


def test_phonemize_keeps_punctuation_and_splits_sentences():
    # espeak-ng 1.51 (Debian) output, with the marks put back the way Piper's front end does
    assert speech.phonemize("Hello, world. How are you?") == ["həlˈoʊ, wˈɜːld.", "hˈaʊ ɑːɹ juː?"]
    assert speech.phonemize("fine; thanks: really!") == ["fˈaɪn; θˈæŋks: ɹˈiəli!"]
    assert speech.phonemize("no mark at the end") == ["nˈoʊ mˈɑːɹk æt ðɪ ˈɛnd"]
    assert speech.phonemize("  ... , ") == []


def test_clauses_spaced_dash_pauses_and_ellipsis_goes_on():
    assert speech.clauses("Wait -- what... yes?! a.m., ok") == [
        ("Wait", ";"), ("what", " "), ("yes", "?"), ("a.m", ","), ("ok", "")]


def test_a_clause_espeak_splits_itself_keeps_its_place():
    # espeak breaks the clause at the unspaced dash: the per-clause fallback keeps the words in order
    out = speech.phonemize("one–two three, four.")
    assert len(out) == 1 and out[0].endswith("fˈoːɹ.") and ", " in out[0]


def test_one_espeak_program_serves_many_texts_and_restarts_when_gone():
    first = speech.phonemize("Good morning.")
    program = speech._PROGRAMS[(os.getpid(), "en-us")]
    assert speech.phonemize("Good evening.") != first and speech._PROGRAMS[(os.getpid(), "en-us")] is program
    program.proc.kill()
    program.proc.wait()
    assert speech.phonemize("Good morning.") == first  # a fresh program took over
    assert speech._PROGRAMS[(os.getpid(), "en-us")] is not program


def test_a_clause_holding_the_sentinel_is_spoken_by_a_one_off_program():
    assert speech.phonemize(f"Say {speech._Espeak.SENTINEL} twice.") == [
        speech.phonemize("Say")[0] + " " + speech.phonemize(speech._Espeak.SENTINEL)[0] + " "
        + speech.phonemize("twice.")[0]]


def test_phoneme_ids_layout():
    id_map = {"_": [0], "^": [1], "$": [2], " ": [3], "a": [14], "b": [15], "aɪ": [161]}
    assert speech.phoneme_ids("ab", id_map) == [1, 0, 14, 0, 15, 0, 2]
    assert speech.phoneme_ids("a?b", id_map) == [1, 0, 14, 0, 15, 0, 2]  # unknown phonemes skipped
    assert speech.phoneme_ids("aɪ b", id_map, {("a", "ɪ")}) == [1, 0, 161, 0, 3, 0, 15, 0, 2]
    # NFD: "ç" becomes "c" + the combining cedilla
    assert speech.phoneme_ids("ç", {**id_map, "c": [16], "\u0327": [140]}) == [1, 0, 16, 0, 140, 0, 2]


# piper-tts 1.8.0's ids for these texts (its phonemize + phonemes_to_ids on the joe voice; the bench compares all 20
# of bench/tts.py's sentences): recorded, since piper-tts (GPL-3.0) is only the benchmark's peer
PIPER_IDS = {
    "Hello, world. How are you?": [
        [1, 0, 20, 0, 59, 0, 24, 0, 120, 0, 27, 0, 100, 0, 8, 0, 3, 0, 35, 0, 120, 0, 62, 0, 122, 0, 24, 0, 17, 0, 10, 0,
         2],
        [1, 0, 20, 0, 120, 0, 14, 0, 100, 0, 3, 0, 51, 0, 122, 0, 88, 0, 3, 0, 22, 0, 33, 0, 122, 0, 13, 0, 2]],
    "Thank you for listening; have a wonderful day!": [
        [1, 0, 126, 0, 120, 0, 39, 0, 44, 0, 23, 0, 3, 0, 22, 0, 33, 0, 122, 0, 3, 0, 19, 0, 54, 0, 122, 0, 88, 0, 3, 0,
         24, 0, 120, 0, 74, 0, 31, 0, 59, 0, 26, 0, 74, 0, 44, 0, 12, 0, 3, 0, 20, 0, 39, 0, 34, 0, 3, 0, 50, 0, 3, 0, 35,
         0, 120, 0, 102, 0, 26, 0, 17, 0, 60, 0, 19, 0, 59, 0, 24, 0, 3, 0, 17, 0, 120, 0, 18, 0, 74, 0, 4, 0, 2]],
}


@pytest.mark.parametrize("text", sorted(PIPER_IDS))
def test_ids_match_piper_tts(joe, text):
    assert [speech.phoneme_ids(p, joe.id_map) for p in joe.sentences(text)] == PIPER_IDS[text]


def test_missing_espeak_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(GenloomError, match="Debian package espeak-ng"):
        speech.phonemize("hello")


def test_unknown_espeak_voice_is_an_error():
    with pytest.raises(GenloomError, match="espeak-ng failed for voice 'xx-nope'"):
        speech.phonemize("hello", "xx-nope")


def test_missing_onnxruntime_is_named(monkeypatch, joe_dir):
    monkeypatch.setattr(speech, "ort", None)
    with pytest.raises(GenloomError, match="pip install onnxruntime"):
        speech.load_voice(joe_dir)


def test_load_voice_refuses_a_folder_without_a_voice(tmp_path):
    with pytest.raises(GenloomError, match=r"holds no voice model \(kinds of voice: genloom, piper\)"):
        speech.load_voice(tmp_path)


def test_registry_loads_another_kind_of_voice(tmp_path, monkeypatch):
    class Beep(speech.Voice):
        sample_rate, voices = 8000, ["beep"]

        def sentences(self, text):
            return text.split(".")

        def render(self, sentence, *, speed, voice):
            return np.ones(int(100 / speed), np.float32)

    monkeypatch.setitem(speech.LOADERS, "beep", speech.VoiceLoader(lambda folder: (folder / "beep.json").exists(),
                                                                    lambda folder, threads: Beep()))
    (tmp_path / "beep.json").write_text("{}")
    voice = speech.load_voice(tmp_path)
    assert voice.synthesize("a.b", speed=2.0).shape == (100,)
    with pytest.raises(GenloomError, match="unknown voice 'alloy'; choose one of beep"):
        voice.synthesize("a", voice="alloy")


def test_imported_folder_has_the_voice_and_a_card(joe_dir):
    from pathlib import Path

    folder = Path(joe_dir)
    assert {p.name for p in folder.iterdir()} == {"en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json",
                                                  "MODEL_CARD", "README.md"}
    card = (folder / "README.md").read_text()
    assert "CC0" in card and "non-commercial" in card and "GPL" in card and "piper-tts" in card


def test_joe_speaks_sentence_by_sentence(joe):
    assert joe.sample_rate == 22050 and joe.voices == ["joe"]
    chunks = list(joe.stream("Hello there. Good morning!"))
    assert len(chunks) == 2 and all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    for c in chunks:
        assert 0.3 < len(c) / joe.sample_rate < 3.0  # a short sentence, not silence
        assert np.abs(c).max() == pytest.approx(1.0, abs=1e-3)  # peak-normalised as Piper does
        assert np.sqrt(np.mean(c ** 2)) > 0.02


def test_speed_scales_the_length(joe):
    text = "The quick brown fox jumps over the lazy dog."
    slow, normal, fast = (len(joe.synthesize(text, speed=s)) for s in (0.5, 1.0, 2.0))
    # length_scale = 1/speed; durations are whole frames rounded up per phoneme, so fast speech shrinks less
    assert slow > 1.6 * normal and normal > 1.3 * fast


@pytest.mark.parametrize("text,speed,match", [("", 1.0, "empty"), ("   ", 1.0, "empty"),
                                              ("x" * 4097, 1.0, "4097 characters; at most 4096"),
                                              ("hi", 0.2, "speed 0.2 is out of range; choose a value from 0.25 to 4.0"),
                                              ("hi", float("nan"), "out of range")])
def test_bad_input(joe, text, speed, match):
    with pytest.raises(GenloomError, match=match):
        joe.synthesize(text, speed=speed)


# ---- genloom import-voice / speak ----


def test_speak_writes_the_format_of_the_extension(run_main, joe_dir, tmp_path):
    code, out, err = run_main("speak", "-m", joe_dir, "Hello there. Good morning!", "--out", tmp_path / "a.flac")
    assert code == 0, err
    assert "2 sentences, flac, 22050 Hz, voice joe" in out
    audio, rate = sf.read(tmp_path / "a.flac")
    assert rate == 22050 and 0.6 < len(audio) / rate < 5.0
    code, out, err = run_main("speak", "-m", joe_dir, "Hi.", "--out", tmp_path / "b.bin", "--format", "mp3",
                              "--speed", "2")
    assert code == 0, err
    data = (tmp_path / "b.bin").read_bytes()
    assert data.startswith(b"ID3") and labels.read_label(data, "mp3")["Label"] == "1"  # the label's ID3v2 tag
    audio, rate = sf.read(io.BytesIO(data))  # then MPEG audio (libsndfile decodes MP3)
    assert rate == 22050 and len(audio) > 0.2 * rate


def test_speak_labels_and_watermarks_what_it_writes(run_main, joe_dir, tmp_path):
    data_dir = tmp_path / "d"
    code, out, err = run_main("speak", "-m", joe_dir, "The label goes with the file.", "--out", tmp_path / "a.wav",
                              "--data-dir", data_dir)
    assert code == 0, err
    wav = (tmp_path / "a.wav").read_bytes()
    record = labels.read_label(wav, "wav")
    log = json.loads((tmp_path / "aigc-log.jsonl").read_text().splitlines()[-1])
    assert record["Label"] == "1" and record["ProduceID"] == log["ProduceID"] and log["file"] == "a.wav"
    assert watermark.detect_bytes(wav, watermark.installation_key(data_dir))["detected"]
    code, out, err = run_main("speak", "-m", joe_dir, "The label goes with the file.", "--out", tmp_path / "b.wav",
                              "--data-dir", data_dir, "--watermark", "off", "--no-implicit-labels")
    plain = (tmp_path / "b.wav").read_bytes()
    assert code == 0 and labels.read_label(plain, "wav") is None and "implicit labels switched off" in err
    assert not watermark.detect_bytes(plain, watermark.installation_key(data_dir))["detected"]


def test_speak_reads_a_file_with_a_progress_bar(run_main, joe_dir, tmp_path):
    (tmp_path / "t.txt").write_text("One. Two. Three.")
    code, out, err = run_main("speak", "-m", joe_dir, "--file", tmp_path / "t.txt", "--out", tmp_path / "a.wav")
    assert code == 0 and "3 sentences" in out and "3/3" in err


@pytest.mark.parametrize("args,words", [
    (["", "--out", "x.wav"], "input text is empty"),
    (["hi", "--out", "x.aac"], "x.aac'; use an extension (.flac, .mp3, .ogg, .opus, .pcm, .raw, .wav) or --format"),
    (["hi", "--out", "x.wav", "--format", "aac"], "unsupported audio format 'aac'; choose one of flac, mp3, opus, pcm, wav"),
    (["hi", "--out", "x.wav", "--speed", "5"], "choose a value from 0.25 to 4.0"),
    (["hi", "--out", "x.wav", "--voice", "alloy"], "unknown voice 'alloy'; choose one of joe"),
    (["x" * 4097, "--out", "x.wav"], "at most 4096"),
    (["--out", "x.wav"], "give the text to speak"),
])
def test_speak_bad_input_is_one_line(run_main, joe_dir, tmp_path, args, words):
    args = [str(tmp_path / a) if a.startswith("x.") else a for a in args]
    code, out, err = run_main("speak", "-m", joe_dir, *args)
    assert words in assert_one_line_error(code, out, err)
    assert not list(tmp_path.iterdir())


def test_import_voice_bad_name_is_one_line(run_main, tmp_path):
    code, out, err = run_main("import-voice", "bob", "--out", tmp_path / "v")
    assert "unknown voice 'bob'; choose one of joe" in assert_one_line_error(code, out, err)


def test_speak_names_a_missing_onnxruntime(run_main, joe_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(speech, "ort", None)
    code, out, err = run_main("speak", "-m", joe_dir, "Hi.", "--out", tmp_path / "a.wav")
    assert "onnxruntime is not installed; pip install onnxruntime" in assert_one_line_error(code, out, err)
