"""`genloom eval` on music: a folder of MIDI and a tiny music GPT against a prepared folder's held-out pieces
(validation NLL per token, MusPy features with mgeval OA/KL and the training floor, the HTML report)."""

import json
import math
import shutil

import numpy as np
import pytest
import symusic

from genloom import evaluate as ev
from genloom.data import music
from genloom.data.text import TokenData
from genloom.errors import GenloomError
from genloom.metrics.text import perplexity
from genloom.report import Section, render_html, write_report

from conftest import ROOT, assert_one_line_error, make_cfg

CHORDS = [(48, 55, 64, 72), (53, 57, 65, 72), (55, 59, 62, 71), (45, 57, 64, 72), (50, 57, 65, 69)]


def chorale(seed: int, bars: int = 6, tpq: int = 480) -> symusic.Score:
    """A four-voice C-major piece: one chord from CHORDS per beat, 4/4."""
    rng = np.random.default_rng(seed)
    score = symusic.Score(tpq)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track("choir", 0, False)
    for beat in range(bars * 4):
        for p in CHORDS[int(rng.integers(len(CHORDS)))]:
            track.notes.append(symusic.Note(beat * tpq, tpq, p, 80))
    score.tracks.append(track)
    return score


def noise(seed: int, bars: int = 6, tpq: int = 480) -> symusic.Score:
    """Single random chromatic notes at random sixteenths over four octaves: nothing like CHORDS."""
    rng = np.random.default_rng(1000 + seed)
    score = symusic.Score(tpq)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track("noise", 0, False)
    for t in sorted(rng.choice(bars * 16, bars * 6, replace=False)):
        track.notes.append(symusic.Note(int(t) * tpq // 4, tpq // 4, int(rng.integers(40, 90)), 80))
    score.tracks.append(track)
    return score


@pytest.fixture(scope="module")
def music_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("music")
    src = root / "src"
    src.mkdir()
    for i in range(16):
        chorale(i).dump_midi(str(src / f"piece{i:02d}.mid"))
    music.prepare(str(src), root / "data", val_fraction=0.25, transpose=0)
    return root / "data"


@pytest.fixture(scope="module")
def music_model(music_dir, tmp_path_factory):
    from genloom.callbacks import default_callbacks
    from genloom.train import Trainer

    out = tmp_path_factory.mktemp("run") / "chorale-gpt"
    cfg = make_cfg(music_dir, out, model={"block_size": 64}, max_steps=40, lr=1e-2, warmup_steps=4,
                   eval_interval=20, ckpt_interval=20)
    Trainer(cfg, callbacks=default_callbacks(progress=False)).fit()
    return out / "best"


def midi_dir(tmp_path, scores, name):
    d = tmp_path / name
    d.mkdir()
    for i, s in enumerate(scores):
        s.dump_midi(str(d / f"{i:02d}.mid"))
    return d


def test_real_pieces_overlap_the_held_out_ones_more_than_noise(music_dir, tmp_path):
    like = midi_dir(tmp_path, [chorale(100 + i) for i in range(8)], "like")
    unlike = midi_dir(tmp_path, [noise(i) for i in range(8)], "unlike")
    a, b = ev.midi_section(str(like), str(music_dir), bars=4), ev.midi_section(str(unlike), str(music_dir), bars=4)
    assert a.metrics["mean_overlap"] > b.metrics["mean_overlap"] + 0.3
    assert a.metrics["overlap[scale_consistency]"] > 0.5 > b.metrics["overlap[scale_consistency]"]
    assert a.metrics["mean_kl"] < b.metrics["mean_kl"]
    # the floor (training pieces vs held-out) is the same whatever is evaluated, and a real-like set is near it
    floor = a.metrics["mean_overlap_floor_train_vs_heldout"]
    assert floor == b.metrics["mean_overlap_floor_train_vs_heldout"] and floor > 0.6
    assert a.raw["held_out_pieces"] == 4 and a.raw["pieces"] == 8 and a.raw["bars"] == 4
    assert "mgeval" in a.protocols["features"] and "first 4 bars" in a.protocols["features"]


def test_crop_bars_resamples_and_cuts():
    s = ev.crop_bars(chorale(0, bars=6), 2)
    assert s.ticks_per_quarter == 24 and s.end() == 2 * 4 * 24
    assert len(ev.crop_bars(chorale(0, bars=6), 0).tracks[0].notes) == 6 * 4 * 4


def test_music_model_section(music_model, music_dir, tmp_path):
    s = ev.music_model_section(str(music_model), str(music_dir), n=5, bars=1, seed=3)
    lm = ev.music_model(str(music_model))
    want = perplexity(lm.model, TokenData(str(music_dir)).split("val"))
    assert s.metrics["nll_nats_per_token"] == pytest.approx(want["nll_nats_per_token"])
    assert s.metrics["nll_nats_per_token"] < math.log(lm.tokenizer.vocab_size)  # it learned something
    assert s.raw["samples"] == 5 and s.raw["features"]["features"]["pitch_range"]["candidate_n"] <= 5
    assert "seeds 3..7" in s.protocols["generation"] and "sliding window" in s.protocols["validation NLL"]
    again = ev.music_model_section(str(music_model), str(music_dir), n=5, bars=1, seed=3)
    assert again.raw["features"] == s.raw["features"]  # same seeds, same pieces
    ids = ev.sample_music(lm.model, lm.tokenizer, 3, seed=3)
    assert ids[1] == ev.sample_music(lm.model, lm.tokenizer, 1, seed=4)[0]  # piece i uses seed + i
    long = ev.sample_music(lm.model, lm.tokenizer, 2, seed=0, max_tokens=150)  # past the 64-token context
    assert all(len(x) == 150 or x[-1] == lm.tokenizer.eot_id for x in long) and max(map(len, long)) > 64
    assert long == ev.sample_music(lm.model, lm.tokenizer, 2, seed=0, max_tokens=150)
    json_path, html_path = write_report(tmp_path / "rep", [s])
    page = html_path.read_text()
    assert page.count("<img") >= 3 and "download='sample-0.mid'" in page  # histograms, piano rolls, loss curve
    assert page.count("<audio") == 5 and "data:audio/mpeg;base64," in page  # 4 samples + 1 held-out, FluidSynth
    media = json.loads(json_path.read_text())["sections"][0]["media"]
    mids = [m for m in media if m["file"].endswith(".mid")]
    assert len(mids) == 5 and (tmp_path / "rep" / mids[0]["file"]).read_bytes()[:4] == b"MThd"


def test_a_text_model_is_not_a_music_model():
    with pytest.raises(GenloomError, match="not a music model"):
        ev.music_model(str(ROOT / "models" / "tang"))


def test_media_render_as_players_and_links():
    s = Section("x", "music")
    s.media += [("a take", "take.wav", b"RIFF0000WAVE"), ("its score", "take.mid", b"MThd")]
    page = render_html("t", [s], {})
    assert page.count("<audio") == 1 and "data:audio/wav;base64," in page and "download='take.mid'" in page


def test_cli_music(music_model, music_dir, tmp_path, run_main):
    code, out, err = run_main("eval", "-m", music_model, "-d", music_dir, "-n", "3", "--bars", "1",
                              "--report", tmp_path / "r")
    assert code == 0, err
    res = json.loads(out)
    assert res["samples"] == 3 and math.isfinite(res["nll"]["nll_nats_per_token"])
    assert (tmp_path / "r" / "report.html").is_file()


@pytest.mark.parametrize("case", ["no-data", "bars", "not-midi", "empty-folder", "text-data"])
def test_cli_music_errors(case, music_dir, music_model, english_dir, tmp_path, run_main):
    bad = tmp_path / "bad"
    bad.mkdir()
    if case == "no-data":
        shutil.copy(next((music_dir / "pieces" / "val").glob("*.mid")), bad)
        args, want = ("--midi", bad), "--midi needs --data"
    elif case == "bars":
        args, want = ("--midi", bad, "-d", music_dir, "--bars", "-1"), "--bars must be >= 0"
    elif case == "not-midi":
        (bad / "x.mid").write_text("hello")
        args, want = ("--midi", bad, "-d", music_dir), "not a MIDI file"
    elif case == "empty-folder":
        args, want = ("--midi", bad, "-d", music_dir), "holds no MIDI files"
    else:  # a text folder is not music: --midi has no held-out pieces there
        args, want = ("--midi", music_dir / "pieces" / "val", "-d", english_dir), "no val pieces"
    line = assert_one_line_error(*run_main("eval", *args))
    assert want in line, line
