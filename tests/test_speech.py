"""The speech runner: Piper's espeak-ng front end (clauses, punctuation, ids) and the joe voice on onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from genloom.errors import GenloomError
from genloom.importers import import_voice
from genloom.pipelines import speech


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


def test_phoneme_ids_layout():
    id_map = {"_": [0], "^": [1], "$": [2], " ": [3], "a": [14], "b": [15], "aɪ": [161]}
    assert speech.phoneme_ids("ab", id_map) == [1, 0, 14, 0, 15, 0, 2]
    assert speech.phoneme_ids("a?b", id_map) == [1, 0, 14, 0, 15, 0, 2]  # unknown phonemes skipped
    assert speech.phoneme_ids("aɪ b", id_map, {("a", "ɪ")}) == [1, 0, 161, 0, 3, 0, 15, 0, 2]
    # NFD: "ç" becomes "c" + the combining cedilla
    assert speech.phoneme_ids("ç", {**id_map, "c": [16], "\u0327": [140]}) == [1, 0, 16, 0, 140, 0, 2]


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
    with pytest.raises(GenloomError, match=r"holds no voice model \(expected one of: \*\.onnx\.json, model\.safetensors\)"):
        speech.load_voice(tmp_path)


def test_registry_loads_another_kind_of_voice(tmp_path, monkeypatch):
    class Beep(speech.Voice):
        sample_rate, voices = 8000, ["beep"]

        def sentences(self, text):
            return text.split(".")

        def render(self, sentence, *, speed, voice):
            return np.ones(int(100 / speed), np.float32)

    monkeypatch.setitem(speech.LOADERS, "beep.json", lambda folder, threads: Beep())
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
