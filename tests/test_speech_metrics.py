"""Speech metrics for `genloom eval --audio`: mel-cepstral distortion (a hand-computed case, DTW against brute
force, invariances), WER with Whisper's normaliser against jiwer, the real-time factor; the report's players and
spectrograms, and Whisper's WER protocol in the CLI's output."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
from test_asr import CLIP, CLIP_TEXT, whisper_dir  # noqa: F401  (a fixture)
from whisper_normalizer.english import EnglishTextNormalizer

from genloom.errors import GenloomError
from genloom.metrics import audio

OTHER = CLIP.parent / "sense_and_sensibility_01_austen_64kb-0930.wav"  # "he might even have been made amiable himself"


def test_mcd_hand_computed():
    ref, syn = np.zeros((1, 25)), np.zeros((1, 25))
    ref[0, 1], ref[0, 3] = 1.0, 0.5
    syn[0, 0], syn[0, 3] = 7.0, -0.5  # c_0 (energy) differs too, and is left out
    # by hand: sum_d (c_d - c'_d)^2 = 1^2 + 1^2 = 2 -> 10 / ln 10 * sqrt(2 * 2) = 8.6859 dB
    assert audio.mcd_from_cepstra(ref, syn)["mcd_db"] == pytest.approx(20 / math.log(10), abs=1e-9)
    # DTW: the reference says a, a, b; the other a, b: the two a's map onto one a and the distortion is 0
    a, b = np.zeros(25), np.zeros(25)
    b[1:] = 0.3
    assert audio.mcd_from_cepstra(np.stack([a, a, b]), np.stack([a, b]))["mcd_db"] == 0.0


def test_dtw_finds_the_cheapest_path():
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (2, 3), (4, 4), (5, 3)]:
        cost = rng.random((n, m))
        path = audio.dtw(cost)
        assert path[0] == (0, 0) and path[-1] == (n - 1, m - 1)
        assert all((i2 - i1, j2 - j1) in ((1, 0), (0, 1), (1, 1)) for (i1, j1), (i2, j2) in itertools.pairwise(path))
        best = math.inf  # brute force over every monotonic path of the three steps
        for steps in itertools.product(((1, 0), (0, 1), (1, 1)), repeat=n + m - 2):
            i = j = 0
            total = cost[0, 0]
            for di, dj in steps:
                if (i, j) == (n - 1, m - 1):
                    break
                i, j = i + di, j + dj
                if i >= n or j >= m:
                    total = math.inf
                    break
                total += cost[i, j]
            if (i, j) == (n - 1, m - 1):
                best = min(best, total)
        assert sum(cost[i, j] for i, j in path) == pytest.approx(best)


def test_mcd_of_real_speech():
    x, sr = sf.read(str(CLIP), dtype="float32")
    y, sr2 = sf.read(str(OTHER), dtype="float32")
    assert audio.mcd(x, sr, x, sr)["mcd_db"] == 0.0
    assert audio.mcd(x, sr, 0.25 * x, sr)["mcd_db"] < 1e-9  # a gain only moves c_0
    same_words = audio.mcd(x, sr, np.repeat(x, 2), sr * 2)["mcd_db"]  # the same sound held at twice the rate
    noisy = audio.mcd(x, sr, x + 0.01 * np.random.default_rng(0).standard_normal(x.size).astype(np.float32), sr)
    other = audio.mcd(x, sr, y, sr2)
    assert same_words < 1.0 < noisy["mcd_db"] and 3.0 < other["mcd_db"] < 20.0, (same_words, noisy, other)
    assert "DTW" in other["protocol"] and "sum_d=1..24" in other["protocol"] and "16000 Hz" in other["protocol"]


def test_whisper_normalised_wer_matches_jiwer():
    norm = EnglishTextNormalizer()
    hyps = ["He was not an ill-disposed young man.", "Mr. Smith paid $20 for 10 apples", "the colour is grey"]
    refs = ["he was not an ill disposed young man", "mister smith paid twenty dollars for ten apples",
            "the color is gray today"]
    got = audio.wer(hyps, refs, "whisper")
    want = jiwer.wer([norm(r) for r in refs], [norm(h) for h in hyps])
    # normalised references: 8 words, "mister smith paid $20 for 10 apples" (7), "the color is gray today" (5)
    assert got["wer"] == pytest.approx(want) and got["reference_words"] == 8 + 7 + 5
    assert got["wer"] == pytest.approx(1 / 20)  # only "today" is missing
    assert audio.wer(hyps, refs, "basic")["wer"] > 0.3  # the basic one counts "$20" vs "twenty dollars", "colour"...
    assert "EnglishTextNormalizer" in got["protocol"] and "whisper-normalizer" in got["protocol"]
    with pytest.raises(GenloomError, match="choose one of basic, whisper"):
        audio.wer(hyps, refs, "nltk")


def test_real_time_factor():
    assert audio.real_time_factor(0.5, 2.0)["rtf"] == 0.25
    with pytest.raises(GenloomError, match="longer than 0 s"):
        audio.real_time_factor(1.0, 0.0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: apt-get install espeak-ng")
    root = tmp_path_factory.mktemp("speech")
    (root / "syn").mkdir()
    (root / "ref").mkdir()
    shutil.copy(CLIP, root / "ref" / "a.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(root / "syn" / "a.wav"), CLIP_TEXT], check=True)
    (root / "texts.txt").write_text(CLIP_TEXT + "\n")
    return root


def test_eval_audio_with_whisper_mcd_players_and_spectrograms(run_main, folders, whisper_dir, tmp_path):  # noqa: F811
    code, out, err = run_main("eval", "--audio", folders / "syn", "--texts", folders / "texts.txt",
                              "--reference-audio", folders / "ref", "--asr", whisper_dir, "--report", tmp_path)
    assert code == 0, err
    res = json.loads(out)
    row = res["files"][0]
    assert row["wer"] <= 0.25 and 0 < row["asr_rtf"] < 5 and 3.0 < row["mcd_db"] < 20.0, row
    assert res["total"]["mcd_db"] == row["mcd_db"]
    for words in ("Whisper", "beam size 5", "language en", "EnglishTextNormalizer", "MCD", "real-time factor"):
        assert words in res["protocol"], words
    page = (tmp_path / "report.html").read_text()
    assert page.count("<audio controls") == 2 and "data:audio/wav;base64," in page
    assert "log-mel spectrograms" in page and "data:image/png;base64," in page
    report = json.loads((tmp_path / "report.json").read_text())["sections"][0]
    assert [m["file"] for m in report["media"]] == ["media-0-0.wav", "media-0-1.wav"]
    assert Path(tmp_path / report["figures"][0]["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_audio_pocketsphinx_and_bad_input(run_main, folders, tmp_path):
    code, out, err = run_main("eval", "--audio", folders / "syn", "--texts", folders / "texts.txt",
                              "--asr", "pocketsphinx")
    assert code == 0, err
    assert "pocketsphinx" in json.loads(out)["protocol"]
    (tmp_path / "refs").mkdir()
    for args, words in [(("--audio", folders / "syn", "--reference-audio", tmp_path / "refs"),
                         "no reference recording for a.wav"),
                        (("--reference-audio", folders / "ref"), "--reference-audio needs --audio"),
                        (("--audio", folders / "syn", "--texts", folders / "texts.txt", "--asr", tmp_path / "no"),
                         "speech recognition model not found")]:
        code, out, err = run_main("eval", *args)
        assert code == 2 and err.startswith("genloom: error: ") and words in err and err.count("\n") == 1, err
