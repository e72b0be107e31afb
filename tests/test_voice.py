"""Train a voice: LJSpeech-layout data, features and Griffin-Lim, distillation from the Piper teacher, the
FastSpeech family through the one Trainer, the trained-voice loader, the starter's card."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, random_gpt, run_cli

from genloom import families
from genloom.callbacks import Callback, default_callbacks
from genloom.checkpoints import export_model
from genloom.data import speech
from genloom.data.text import prepare as prepare_data
from genloom.errors import GenloomError
from genloom.importers import import_voice
from genloom.pipelines import distill
from genloom.pipelines.speech import load_voice
from genloom.train import Trainer

ID_MAP = {"_": [0], "^": [1], "$": [2], "a": [3], "b": [4], "c": [5]}
STARTER = ROOT / "models" / "voice-joe-fs2"


def harmonic(n: int, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal: harmonics of a gliding f0 under a slow amplitude envelope."""
    t = np.arange(n) / speech.SAMPLE_RATE
    f = f0 * (1 + 0.1 * np.sin(2 * np.pi * 1.5 * t + seed))
    phase = 2 * np.pi * np.cumsum(f) / speech.SAMPLE_RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    return (0.3 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)) / np.abs(x).max()).astype(np.float32)


def write_folder(folder: Path, n: int = 12) -> Path:
    """A tiny LJSpeech-layout folder with phonemes.csv/json as distill-voice writes them."""
    rng = np.random.default_rng(0)
    (folder / "wavs").mkdir(parents=True)
    meta, phon = [], []
    for i in range(n):
        ids = [1] + [int(x) for x in rng.integers(3, 6, 8)] + [2]
        durs = [int(x) for x in rng.integers(1, 7, len(ids))]
        sf.write(folder / "wavs" / f"u{i:02d}.wav", harmonic(sum(durs) * speech.HOP, seed=i), speech.SAMPLE_RATE)
        meta.append(f"u{i:02d}|Text {i}.|Text {i}.")
        phon.append(f"u{i:02d}|{' '.join(map(str, ids))}|{' '.join(map(str, durs))}")
    (folder / "metadata.csv").write_text("\n".join(meta) + "\n")
    (folder / "phonemes.csv").write_text("\n".join(phon) + "\n")
    (folder / "phonemes.json").write_text(json.dumps({"phoneme_id_map": ID_MAP, "sample_rate": speech.SAMPLE_RATE,
                                                      "hop": speech.HOP, "espeak_voice": "en-us", "teacher": "test"}))
    return folder


@pytest.fixture
def speech_folder(tmp_path):
    return write_folder(tmp_path / "ljs")


def test_reader_split_is_deterministic(speech_folder, tmp_path):
    rows = speech.read_metadata(speech_folder)
    assert [r.id for r in rows][:2] == ["u00", "u01"] and rows[0].normalized == "Text 0."
    a = prepare_data(str(speech_folder), tmp_path / "a", val_fraction=0.25, seed=1)  # `genloom data` dispatch
    b = speech.prepare(speech_folder, tmp_path / "b", val_fraction=0.25, seed=1)
    c = speech.prepare(speech_folder, tmp_path / "c", val_fraction=0.25, seed=2)
    assert a["modality"] == "speech" and a["utterances"] == {"train": 9, "val": 3}
    assert a["val_ids"] == b["val_ids"] and a["val_ids"] != c["val_ids"]
    data = speech.SpeechData(tmp_path / "a")
    ids, durs, mel = data.utterance("val", 0)
    assert mel.shape == (durs.sum(), speech.N_MELS) and len(ids) == len(durs) == 10  # frames = durations' sum


def test_reader_names_bad_input(tmp_path, speech_folder):
    with pytest.raises(GenloomError, match="no metadata.csv"):
        speech.read_metadata(tmp_path)
    (speech_folder / "phonemes.csv").unlink()
    with pytest.raises(GenloomError, match="distill-voice"):
        speech.prepare(speech_folder, tmp_path / "p")


def test_mel_filterbank_and_griffin_lim_round_trip():
    assert float(speech._hz_to_mel(1000.0)) == pytest.approx(15.0)  # Slaney: 1 kHz is mel 15
    fb = speech.mel_filterbank()
    freqs = np.linspace(0, speech.SAMPLE_RATE / 2, speech.N_FFT // 2 + 1)
    centres = freqs[fb.argmax(1).numpy()]
    assert fb.shape == (80, 513) and np.all(np.diff(centres) >= 0) and centres[-1] < speech.FMAX
    wave = harmonic(speech.SAMPLE_RATE)
    mel = speech.log_mel(wave)
    assert mel.shape == (80, len(wave) // speech.HOP + 1)
    back = speech.griffin_lim(mel)
    mel2 = speech.log_mel(back)[:, : mel.shape[1]]
    err = float((mel2 - mel[:, : mel2.shape[1]]).abs().mean())
    noise = float((speech.log_mel(np.random.default_rng(0).standard_normal(len(wave)).astype(np.float32) * 0.1)
                   [:, : mel2.shape[1]] - mel[:, : mel2.shape[1]]).abs().mean())
    assert err < 0.6 and err < noise / 4, (err, noise)


def test_distillation_writes_the_layout_and_resumes(tmp_path):
    teacher = tmp_path / "joe"
    import_voice("joe", str(teacher))
    out = tmp_path / "dist"
    res = distill.distill(teacher, out, n=3, heldout=2, progress=False)
    assert res["utterances"] == 3 and res["resumed"] == 0
    held = (out / "heldout.txt").read_text().splitlines()
    rows = speech.read_metadata(out)
    assert len(held) == 2 and len(rows) == 3 and not {r.text for r in rows} & set(held)
    info, phon = speech.read_phonemes(out)
    assert info["hop"] == 256 and info["phoneme_id_map"]["_"] == [0]
    for r in rows:
        wave, sr = sf.read(out / "wavs" / f"{r.id}.wav")
        ids, durs = phon[r.id]
        assert sr == 22050 and len(ids) == len(durs) and len(wave) == sum(durs) * 256  # the teacher's own durations
    # an interrupted run: the last WAV gone, its rows cut; resuming redoes just that one
    (out / "wavs" / f"{rows[-1].id}.wav").unlink()
    (out / "metadata.csv").write_text((out / "metadata.csv").read_text()[:-5])
    res = distill.distill(teacher, out, n=3, heldout=2, progress=False)
    assert res["resumed"] == 2 and len(speech.read_metadata(out)) == 3
    with pytest.raises(GenloomError, match="other settings"):
        distill.distill(teacher, out, n=3, heldout=3, progress=False)
    res = distill.distill(teacher, out, n=2, heldout=2, progress=False)  # fewer: the first n kept, the rest dropped
    assert res["resumed"] == 2 and [r.id for r in speech.read_metadata(out)] == [r.id for r in rows[:2]]


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, info):
        if info["step"] == self.step:
            trainer.request_stop("interrupted")


def tiny_cfg(folder, prepared, out, **train):
    return families.run_config_from_dict({
        "family": "fastspeech",
        "data": {"source": str(folder), "dir": str(prepared), "val_fraction": 0.25},
        "model": {"d_model": 32, "n_heads": 2, "encoder_layers": 1, "conv_hidden": 32, "kernel_size": 3,
                  "decoder_dilations": [1, 2], "crop": 16, "predictor_hidden": 16, "max_phonemes": 64},
        "train": {"out_dir": str(out), "max_steps": 6, "batch_size": 4, "lr": 3e-3, "warmup_steps": 0,
                  "eval_interval": 3, "eval_batches": 1, "ckpt_interval": 3, "sample_interval": 3,
                  "log_interval": 1, "threads": 1, **train}})


def test_family_trains_resumes_and_speaks(speech_folder, tmp_path):
    straight = Trainer(tiny_cfg(speech_folder, tmp_path / "prep", tmp_path / "a"))
    sa = straight.fit()
    assert sa["step"] == 6 and sa["best_val_loss"] < 10
    for name in ("samples-0.wav", "samples-0.png", "samples/step-000003-0.wav", "loss.png", "best/model.safetensors"):
        assert (tmp_path / "a" / name).is_file(), name
    wave, sr = sf.read(tmp_path / "a" / "samples-0.wav")
    assert sr == 22050 and len(wave) > 256
    first = Trainer(tiny_cfg(speech_folder, tmp_path / "prep", tmp_path / "b"),
                    callbacks=default_callbacks(progress=False) + [StopAt(3)])
    assert first.fit()["stopped"] == "interrupted"
    second = Trainer(tiny_cfg(speech_folder, tmp_path / "prep", tmp_path / "b"), resume=True)
    assert second.step == 3
    assert second.fit()["step"] == 6
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5  # resume retraces the straight run
    # the trained voice is a Voice: load_voice picks the loader from the folder's files
    best = tmp_path / "a" / "best"
    cfg = json.loads((best / "config.json").read_text())
    cfg["model"]["symbols"] = json.dumps({**ID_MAP, "ə": [3], "t": [4], "s": [5]})
    (best / "config.json").write_text(json.dumps(cfg))
    voice = load_voice(best, threads=1)
    audio = voice.synthesize("test.")
    assert audio.dtype == np.float32 and len(audio) > 0 and np.abs(audio).max() <= 1.0
    assert len(voice.synthesize("test " * 40)) > len(audio)  # past the encoder's 64 positions: spoken in pieces
    assert len(voice.synthesize("test test test.", speed=2.0)) < len(voice.synthesize("test test test."))


def test_load_voice_refuses_a_model_that_is_not_a_voice(tmp_path):
    gpt = random_gpt()
    export_model(tmp_path / "gpt", family="gpt", model=gpt, model_config=gpt.config, tokenizer=None)
    with pytest.raises(GenloomError, match="holds no voice model"):
        load_voice(tmp_path / "gpt")


def test_distill_cli_names_bad_teacher(tmp_path):
    r = run_cli("distill-voice", "-m", str(tmp_path), "--out", str(tmp_path / "o"), "-n", "2")
    assert r.returncode == 2 and "genloom: error:" in r.stderr and "holds no voice" in r.stderr


def test_starter_card():
    card = (STARTER / "README.md").read_text()
    assert "FastSpeech 2" in card and "Griffin-Lim" in card and "word error rate" in card
    assert (STARTER / "loss.png").is_file() and (STARTER / "samples-0.wav").is_file()
