"""Music generation: compose (lengths in bars or seconds, primers, windows past the context, seeds), the
FluidSynth/LAME/piano-roll renderers, `genloom generate` on a music model and its one-line errors."""

import io
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest
import symusic
import torch

from conftest import assert_one_line_error
from genloom.checkpoints import export_model, load_model
from genloom.data.tokenizers import MidiTokenizer
from genloom.errors import GenloomError
from genloom.models.gpt import GPT, GPTConfig
from genloom.pipelines import music as pm

ROOT = Path(__file__).resolve().parents[1]
STARTER = ROOT / "models" / "chorales"


def make_score(pitches, tpq=480, drum=False):
    score = symusic.Score(tpq)
    track = symusic.Track("t", 0, drum)
    for i, p in enumerate(pitches):
        track.notes.append(symusic.Note(i * tpq, tpq, p, 90))
    score.tracks.append(track)
    return score


@pytest.fixture(scope="module")
def tiny_music_model(tmp_path_factory):
    """A random 2-layer GPT over the REMI vocabulary, context 32 tokens, exported like a trained model."""
    tok = MidiTokenizer.create("remi")
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32)
    folder = tmp_path_factory.mktemp("music-model")
    export_model(folder, family="gpt", model=GPT(cfg), model_config=cfg, tokenizer=tok,
                 card={"data": {"source": "test", "modality": "music"}})
    return folder


def test_same_seed_same_notes_and_another_seed_other_notes(tiny_music_model):
    lm = load_model(tiny_music_model)
    a = pm.compose(lm, pm.MusicOptions(seconds=1.0, seed=11))
    b = pm.compose(lm, pm.MusicOptions(seconds=1.0, seed=11))
    c = pm.compose(lm, pm.MusicOptions(seconds=1.0, seed=12))
    assert a.midi() == b.midi() and a.midi() != c.midi()
    assert a.seed == 11 and a.parameters["seed"] == 11
    assert a.score.ticks_per_quarter == pm.OUTPUT_TPQ


def test_a_piece_longer_than_the_context_is_written_in_windows(tiny_music_model, monkeypatch):
    lm = load_model(tiny_music_model)
    monkeypatch.setattr(pm, "_reached", lambda *a: None)  # never long enough: sample up to the token limit
    a = pm.compose(lm, pm.MusicOptions(seconds=0.6, seed=1))  # 1 quarter at 100 bpm: a limit of 64 tokens
    assert a.finish_reason == "token_limit" and a.new_tokens == 64 > lm.config.block_size  # the window slid
    assert pm.compose(lm, pm.MusicOptions(seconds=0.6, seed=1)).midi() == a.midi()  # windows seeded too
    assert all(n.end <= a.end_tick for t in a.score.tracks for n in t.notes)


def test_window_starts_at_a_bar_line():
    ids = list(range(100, 140))
    ids[25] = 4
    assert pm._window(ids[:10], 32, 4) == ids[:10]  # fits: the whole context
    assert pm._window(ids, 32, 4) == ids[25:]  # the last 16, from the bar line in them
    assert pm._window(ids, 32, None) == ids[-16:]


def test_length_in_bars_follows_the_time_signature():
    score = make_score([60] * 12)  # 12 quarters
    score.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    tpq = score.ticks_per_quarter
    opts = pm.MusicOptions(bars=2)
    assert pm._end_tick(score, 0, opts, 120.0) == 6 * tpq  # two bars of 3/4
    assert pm._end_tick(score, tpq, opts, 120.0) == 9 * tpq  # from the next bar line after the primer
    assert pm._end_tick(score, 0, pm.MusicOptions(bars=4), 120.0) is None  # the score does not reach it yet
    assert pm._reached(score, 0, opts, 120.0) == 6 * tpq  # a note starts at the sixth quarter
    assert pm._end_tick(score, tpq, pm.MusicOptions(seconds=1.5), 120.0) == tpq + 3 * tpq


def test_primer_is_kept_and_continued(tiny_music_model):
    lm = load_model(tiny_music_model)
    primer = make_score([60, 62, 64, 65, 67])
    piece = pm.compose(lm, pm.MusicOptions(seconds=1.0, seed=3, tempo=90), primer.dumps_midi())
    notes = sorted((n.time, n.pitch) for t in piece.score.tracks for n in t.notes)
    assert [(t, p) for t, p in notes if p in (60, 62, 64, 65, 67) and t < 5 * 480][:5] == \
        [(i * 480, p) for i, p in enumerate([60, 62, 64, 65, 67])]
    assert piece.start_tick == 5 * 480 and piece.end_tick == 5 * 480 + 720  # 1 s at 90 bpm = 1.5 quarters
    assert piece.tempo == 90 and piece.prompt_tokens > 5
    long = make_score([60 + i % 12 for i in range(40)])  # 40 notes: longer than the 32-token context
    cont = pm.compose(lm, pm.MusicOptions(seconds=0.5, seed=3), long.dumps_midi())
    assert cont.prompt_tokens > lm.config.block_size and cont.start_tick == 40 * 480
    assert {(i * 480, 60 + i % 12) for i in range(40)} <= {(n.time, n.pitch) for n in cont.score.tracks[0].notes}


@pytest.mark.parametrize("opts, message", [
    (dict(bars=0), "1..256 bars"), (dict(bars=257), "1..256 bars"), (dict(seconds=0.0), "more than 0"),
    (dict(seconds=601.0), "at most 600"), (dict(bars=2, seconds=2.0), "not both"), (dict(tempo=5.0), "tempo"),
    (dict(top_p=0.0), "top_p"),
])
def test_bad_options_are_one_clear_error(opts, message):
    with pytest.raises(GenloomError, match=message):
        pm.MusicOptions(**opts).check()


def test_a_text_model_is_not_a_music_model(tmp_path):
    class Lm:
        tokenizer = None
    with pytest.raises(GenloomError, match="not a music model"):
        pm.require_music_model(Lm(), "models/tang")


def test_renderers_wav_mp3_and_piano_roll(tiny_music_model):
    piece = pm.compose(load_model(tiny_music_model), pm.MusicOptions(seconds=1.0, seed=2))
    wav = pm.audio(piece, "wav")
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (pm.SAMPLE_RATE, 2, 2)
        assert w.getnframes() / w.getframerate() >= 0.5  # FluidSynth renders the notes' time (plus release)
    mp3 = pm.wav_to_mp3(wav)
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0
    assert pm.audio(piece, "midi").startswith(b"MThd")
    assert pm.piano_roll_png(piece).startswith(b"\x89PNG")
    with pytest.raises(GenloomError, match="choose one of midi, mp3, wav"):
        pm.audio(piece, "ogg")


def test_missing_renderers_name_the_debian_package(monkeypatch):
    monkeypatch.setenv("GENLOOM_SOUNDFONT", "/nonexistent.sf2")
    with pytest.raises(GenloomError, match="timgm6mb-soundfont"):
        pm.soundfont()
    monkeypatch.setenv("GENLOOM_FLUIDSYNTH", "no-such-fluidsynth")
    with pytest.raises(GenloomError, match="Debian package 'fluidsynth'"):
        pm.render_wav(make_score([60]).dumps_midi())


def notes_of(midi: bytes) -> list:
    """The notes of a MIDI file (its label's text event aside: each file has its own ProduceID)."""
    score = symusic.Score.from_midi(midi)
    return [(n.time, n.duration, n.pitch, n.velocity) for t in score.tracks for n in t.notes]


def _genloom(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "genloom", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


def test_genloom_generate_writes_midi_wav_mp3_and_piano_roll(tiny_music_model, tmp_path):
    res = _genloom("generate", "-m", str(tiny_music_model), "--seconds", "1", "--seed", "4", "--mp3",
                   "--out", str(tmp_path), "--top-k", "20")
    assert res.returncode == 0, res.stderr
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["aigc-log.jsonl", "music-4.mid", "music-4.mp3", "music-4.png", "music-4.wav"]
    first = notes_of((tmp_path / "music-4.mid").read_bytes())
    again = _genloom("generate", "-m", str(tiny_music_model), "--seconds", "1", "--seed", "4", "--out",
                     str(tmp_path / "again"), "--top-k", "20")
    assert again.returncode == 0 and notes_of((tmp_path / "again" / "music-4.mid").read_bytes()) == first


def test_genloom_generate_bad_input_is_one_line_and_exit_2(tiny_music_model, tmp_path, run_main, monkeypatch):
    """In-process (genloom.cli.main): tests/test_cli.py's test_bad_input_in_a_real_process covers the real process."""
    (tmp_path / "bad.mid").write_bytes(b"not midi at all")
    make_score([36, 38], drum=True).dump_midi(str(tmp_path / "drums.mid"))
    symusic.Score(480).dump_midi(str(tmp_path / "empty.mid"))
    cases = {
        ("--primer", str(tmp_path / "bad.mid")): "not a MIDI file",
        ("--primer", str(tmp_path / "drums.mid")): "only drum notes",
        ("--primer", str(tmp_path / "empty.mid")): "has no notes",
        ("--bars", "0"): "1..256 bars",
        ("--seconds", "9999"): "at most 600 seconds",
        ("-p", "hello"): "drop --prompt",
    }
    for args, message in cases.items():
        line = assert_one_line_error(*run_main("generate", "-m", tiny_music_model, *args, "--out", tmp_path / "o"))
        assert message in line, (args, line)
    monkeypatch.setenv("GENLOOM_FLUIDSYNTH", "no-such-fluidsynth")
    line = assert_one_line_error(*run_main("generate", "-m", tiny_music_model, "--out", tmp_path / "o"))
    assert "apt-get install --no-install-recommends fluidsynth" in line
    assert not (tmp_path / "o").exists()  # named before anything was sampled or written


def test_starter_writes_exactly_the_asked_bars():
    lm = load_model(STARTER)
    piece = pm.compose(lm, pm.MusicOptions(bars=2, seed=0, temperature=0.9))
    assert piece.finish_reason == "length"
    assert piece.end_tick == 2 * 4 * pm.OUTPUT_TPQ or piece.end_tick == 2 * 3 * pm.OUTPUT_TPQ  # 4/4 or 3/4
    pitches = [n.pitch for t in piece.score.tracks for n in t.notes]
    assert len(pitches) >= 8 and 30 <= min(pitches) and max(pitches) <= 90  # chorale-like: voices, in range


def test_chorales_starter_folder_is_slim_documented_and_listenable():
    weights = STARTER / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size < 8 * 2**20  # a few MB, float16
    assert not list(STARTER.glob("*.pt")) and not list(STARTER.glob("*.bin"))  # nothing to unpickle
    config = json.loads((STARTER / "config.json").read_text())
    assert config["format"] == "genloom-model" and config["dtype"] == "float16"
    card = config["card"]
    assert card["parameters"] > 100_000 and card["train_seconds"] > 0 and card["val_loss"] > 0
    assert card["data"]["modality"] == "music" and card["data"]["documents"]["val"] == 19
    readme = (STARTER / "README.md").read_text(encoding="utf-8")
    assert "bash scripts/train_starters.sh chorales" in readme and "music21" in readme and "TimGM6mb" in readme
    assert (STARTER / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert (STARTER / "sample.png").read_bytes().startswith(b"\x89PNG")
    assert (STARTER / "sample.mid").read_bytes().startswith(b"MThd")
    assert isinstance(load_model(STARTER).tokenizer, MidiTokenizer)
