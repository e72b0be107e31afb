"""Speech data: LJSpeech-layout folders, log-mel features, phoneme ids, and the Griffin-Lim vocoder.

A speech folder in LJSpeech layout holds `metadata.csv` (`id|text|normalized text`, no header) and
`wavs/ID.wav`. A folder that genloom's distillation wrote (genloom.pipelines.distill) also holds
`phonemes.csv` (`id|phoneme ids|durations`, space-separated, one duration in frames per id) and
`phonemes.json` (the teacher's phoneme id map, sample rate and hop): the durations are the teacher's own
(Piper's VITS `w_ceil`), so the acoustic model needs no aligner. `prepare()` (what `genloom data FOLDER`
runs) splits by utterance with genloom.data.split and writes log-mel features beside the ids.

Features (the HiFi-GAN / Tacotron 2 recipe at 22.05 kHz): |STFT| with n_fft 1024, hop 256, Hann window
1024, centred; an 80-band Slaney mel filter bank from 0 to 8000 Hz (librosa's default formula, computed
here); natural log clamped at 1e-5. `griffin_lim` inverts them: the mel bank's pseudo-inverse, then fast
Griffin-Lim (Perraudin et al. 2013, momentum 0.99) for 32 iterations.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from scipy.signal import resample_poly

from genloom.data.split import SEED, VAL_FRACTION, split_indices
from genloom.errors import GenloomError
from genloom.files import atomic_write, atomic_write_bytes, atomic_write_text

SAMPLE_RATE, N_FFT, HOP, N_MELS, FMIN, FMAX = 22050, 1024, 256, 80, 0.0, 8000.0
LOG_FLOOR = 1e-5
GL_ITERS = 32


# ---- the folder ------------------------------------------------------------------------------------
@dataclass
class Utterance:
    id: str
    text: str
    normalized: str


def is_speech_folder(source) -> bool:
    p = Path(str(source))
    return p.is_dir() and (p / "metadata.csv").is_file() and (p / "wavs").is_dir()


def read_metadata(folder) -> list[Utterance]:
    """The rows of metadata.csv (`id|text|normalized`; a missing normalized text is the text)."""
    path = Path(folder) / "metadata.csv"
    if not path.is_file():
        raise GenloomError(f"{folder} is not an LJSpeech-layout folder: no metadata.csv (id|text|normalized text)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 2 or not parts[0]:
            raise GenloomError(f"{path}:{n}: expected id|text|normalized text, got {line[:60]!r}")
        rows.append(Utterance(parts[0], parts[1], parts[2] if len(parts) > 2 and parts[2] else parts[1]))
    if not rows:
        raise GenloomError(f"{path} lists no utterances")
    return rows


def read_phonemes(folder) -> tuple[dict, dict[str, tuple[list[int], list[int]]]]:
    """phonemes.json (id map, rate, hop) and phonemes.csv rows: id -> (phoneme ids, durations in frames)."""
    folder = Path(folder)
    if not (folder / "phonemes.csv").is_file() or not (folder / "phonemes.json").is_file():
        raise GenloomError(
            f"{folder} has no phonemes.csv/phonemes.json (phoneme ids and durations per utterance): the text-to-"
            f"speech task trains on teacher durations; write such a folder with `genloom distill-voice` "
            f"(monotonic alignment search for plain LJSpeech folders is not implemented)")
    info = json.loads((folder / "phonemes.json").read_text())
    rows = {}
    for line in (folder / "phonemes.csv").read_text().splitlines():
        if line.strip():
            uid, ids, durs = line.split("|")
            rows[uid] = ([int(i) for i in ids.split()], [int(d) for d in durs.split()])
    return info, rows


def read_wav(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples at sample_rate (resampled with a polyphase filter when the file differs)."""
    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise GenloomError(f"cannot read {path} as audio ({e})") from None
    wave = wave.mean(axis=1)
    if sr != sample_rate:
        g = np.gcd(sr, sample_rate)
        wave = resample_poly(wave, sample_rate // g, sr // g).astype(np.float32)
    return wave


def wav_bytes(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# ---- features ---------------------------------------------------------------------------------------
def _hz_to_mel(f):
    """Slaney's mel scale (librosa htk=False): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, mel)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN,
                   fmax: float = FMAX) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced in Slaney mels, area-normalised."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.from_numpy(fb.astype(np.float32))


_FB: dict[tuple, torch.Tensor] = {}


def _bank() -> torch.Tensor:
    key = (SAMPLE_RATE, N_FFT, N_MELS, FMIN, FMAX)
    if key not in _FB:
        _FB[key] = mel_filterbank()
    return _FB[key]


def magnitude(wave: torch.Tensor) -> torch.Tensor:
    """|STFT| (..., n_fft // 2 + 1, frames), centred frames: len // hop + 1 of them."""
    return torch.stft(wave, N_FFT, HOP, N_FFT, torch.hann_window(N_FFT), center=True, pad_mode="reflect",
                      return_complex=True).abs()


def log_mel(wave) -> torch.Tensor:
    """(n_mels, frames) natural-log mel spectrogram of a float waveform in [-1, 1]."""
    wave = torch.as_tensor(wave, dtype=torch.float32)
    return torch.log(torch.clamp(_bank() @ magnitude(wave), min=LOG_FLOOR))


def griffin_lim(mel: torch.Tensor, n_iter: int = GL_ITERS, momentum: float = 0.99, power: float = 1.2,
                seed: int = 0) -> np.ndarray:
    """A waveform from a (n_mels, frames) log-mel: pseudo-inverse of the mel bank, then fast Griffin-Lim.

    power > 1 sharpens the estimated magnitudes (Tacotron's 1.5; 1.2 here) to offset the pseudo-inverse's smear."""
    mel = torch.as_tensor(mel, dtype=torch.float32)
    mag = torch.clamp(torch.linalg.pinv(_bank()) @ torch.exp(mel), min=0.0) ** power
    window = torch.hann_window(N_FFT)
    length = (mel.shape[-1] - 1) * HOP
    gen = torch.Generator().manual_seed(seed)
    angles = torch.polar(torch.ones_like(mag), 2 * torch.pi * torch.rand(mag.shape, generator=gen))
    prev = torch.zeros_like(angles)
    for _ in range(n_iter):
        wave = torch.istft(mag * angles, N_FFT, HOP, N_FFT, window, center=True, length=length)
        spec = torch.stft(wave, N_FFT, HOP, N_FFT, window, center=True, pad_mode="reflect", return_complex=True)
        accel = spec - (momentum / (1 + momentum)) * prev
        prev = spec
        angles = accel / accel.abs().clamp(min=1e-8)
    wave = torch.istft(mag * angles, N_FFT, HOP, N_FFT, window, center=True, length=length)
    peak = float(wave.abs().max()) or 1.0
    return (wave / max(peak, 1.0) * 0.95 if peak > 0.95 else wave).numpy().astype(np.float32)


def spectrogram_png(mel, scale: int = 2) -> bytes:
    """A log-mel as a PNG picture (low frequencies at the bottom, viridis-like colours)."""
    m = np.asarray(mel, dtype=np.float32)
    lo, hi = float(m.max()) - 10.0, float(m.max())
    x = np.clip((m - lo) / (hi - lo + 1e-8), 0, 1)[::-1]
    rgb = np.stack([0.27 + 0.73 * x ** 1.5, 0.0 + 0.9 * x, 0.33 + 0.4 * np.sin(np.pi * x)], -1)
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).resize((m.shape[1] * scale, m.shape[0] * scale))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class AudioSamples:
    """Sample audio a task made during training; the samples callback calls write()."""
    waves: list[np.ndarray]
    mels: list[np.ndarray]
    texts: list[str]
    sample_rate: int = SAMPLE_RATE

    def __len__(self) -> int:
        return len(self.waves)

    def write(self, folder, step: int) -> None:
        """samples/step-N-i.wav + .png, and samples-i.wav / .png for the latest; the texts in samples.txt."""
        folder = Path(folder)
        for i, (w, m) in enumerate(zip(self.waves, self.mels)):
            wav, png = wav_bytes(w, self.sample_rate), spectrogram_png(m)
            for stem in (f"samples/step-{step:06d}-{i}", f"samples-{i}"):
                atomic_write_bytes(folder / f"{stem}.wav", wav)
                atomic_write_bytes(folder / f"{stem}.png", png)
        atomic_write_text(folder / "samples.txt", "".join(f"samples-{i}: {t}\n" for i, t in enumerate(self.texts)))


# ---- prepared features -------------------------------------------------------------------------------
def prepare(source, out_dir, val_fraction: float = VAL_FRACTION, seed: int = SEED) -> dict:
    """`genloom data FOLDER` for an LJSpeech-layout folder: split by utterance, write log-mels + ids + durations."""
    src, out = Path(source), Path(out_dir)
    rows = read_metadata(src)
    info, phon = read_phonemes(src)
    if info.get("hop", HOP) != HOP or info.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise GenloomError(f"{src}/phonemes.json has hop {info.get('hop')} at {info.get('sample_rate')} Hz; "
                           f"the features use hop {HOP} at {SAMPLE_RATE} Hz")
    missing = [r.id for r in rows if r.id not in phon]
    if missing:
        raise GenloomError(f"{src}/phonemes.csv has no row for {len(missing)} utterance(s), e.g. '{missing[0]}'")
    train_ix, val_ix = split_indices(len(rows), val_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    counts, frames = {}, {}
    for split, ix in (("train", train_ix), ("val", val_ix)):
        mels, ids, durs, index = [], [], [], []
        m0 = p0 = 0
        for i in ix:
            r = rows[i]
            wav = src / "wavs" / f"{r.id}.wav"
            if not wav.is_file():
                raise GenloomError(f"{src}: metadata.csv names '{r.id}' but {wav} does not exist")
            pid, dur = phon[r.id]
            if len(pid) != len(dur):
                raise GenloomError(f"{src}/phonemes.csv: '{r.id}' has {len(pid)} ids but {len(dur)} durations")
            mel = log_mel(read_wav(wav)).T.numpy()  # (frames, n_mels)
            n = sum(dur)
            mel = np.pad(mel, ((0, max(0, n - len(mel))), (0, 0)), mode="edge")[:n]  # frames = the durations' sum
            mels.append(mel.astype(np.float16))
            ids += pid
            durs += dur
            index.append((m0, n, p0, len(pid)))
            m0, p0 = m0 + n, p0 + len(pid)
        arrays = {"mel": np.concatenate(mels) if mels else np.zeros((0, N_MELS), np.float16),
                  "ids": np.asarray(ids, np.int16), "dur": np.asarray(durs, np.int16),
                  "index": np.asarray(index, np.int64).reshape(-1, 4)}
        for name, arr in arrays.items():
            atomic_write(out / f"{split}.{name}.npy", lambda f, a=arr: np.save(f, a, allow_pickle=False))
        counts[split], frames[split] = len(ix), m0
    meta = {"modality": "speech", "source": str(src), "utterances": counts, "frames": frames,
            "val_ids": [rows[i].id for i in val_ix], "val_texts": [rows[i].normalized for i in val_ix][:8],
            "seconds": {k: round(v * HOP / SAMPLE_RATE, 1) for k, v in frames.items()},
            "features": {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS, "fmin": FMIN,
                         "fmax": FMAX, "log_floor": LOG_FLOOR},
            "phonemes": info, "val_fraction": val_fraction, "split_seed": seed}
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False))
    return meta


class SpeechData:
    """A prepared speech folder: per split, log-mels (frames, n_mels), phoneme ids and durations per utterance."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if not (self.folder / "meta.json").is_file():
            raise GenloomError(f"{folder} holds no prepared speech data (meta.json): run `genloom data SPEECH_FOLDER "
                               f"--out {folder}` first")
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.splits = {}
        for split in ("train", "val"):
            arrays = {k: np.load(self.folder / f"{split}.{k}.npy", allow_pickle=False)
                      for k in ("mel", "ids", "dur", "index")}
            self.splits[split] = arrays

    def __len__(self) -> int:
        return len(self.splits["train"]["index"])

    def utterance(self, split: str, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = self.splits[split]
        m0, n, p0, k = a["index"][i]
        return a["ids"][p0: p0 + k], a["dur"][p0: p0 + k], a["mel"][m0: m0 + n]
