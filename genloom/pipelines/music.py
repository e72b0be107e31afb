"""The music pipeline: a GPT over miditok tokens -> a score of the asked length -> MIDI, WAV, MP3, piano roll.

`genloom generate` and `POST /v1/audio/music` call `compose` then the renderers. A piece longer than the model's
context is written in windows: when the context is full, the last half of it (from a bar line where the tokens
mark one) becomes the prompt of the next window, so any length up to MAX_BARS / MAX_SECONDS can be continued.
Window w samples with seed + w * WINDOW_SEED_STEP (genloom.sample.stream_ids): same seed, same notes.
WAV is rendered by FluidSynth with a General MIDI soundfont, MP3 encoded by LAME (lameenc), the piano roll drawn
by matplotlib.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import symusic

from genloom.data.music import read_midi
from genloom.data.tokenizers import MidiTokenizer
from genloom.errors import GenloomError, choices
from genloom.files import atomic_write_bytes
from genloom.safety.watermark import Watermarks, mark_wav
from genloom.sample import SamplingParams, allow_only, stream_ids

MAX_BARS, MAX_SECONDS = 256, 600.0  # the longest piece one call writes
TEMPO_RANGE = (20.0, 300.0)  # quarter notes per minute
DEFAULT_BARS, DEFAULT_TEMPO = 8, 100.0
WINDOW_SEED_STEP = 1_000_003
TOKENS_PER_QUARTER_CAP = 64  # a model that only writes silence stops here (finish_reason "token_limit")
CHECK_EVERY = 4  # tokens between looks at the decoded length
OUTPUT_TPQ = 480
SAMPLE_RATE = 44100
SOUNDFONTS = (  # the first that exists renders; GENLOOM_SOUNDFONT overrides
    "/usr/share/sounds/sf2/TimGM6mb.sf2",  # Debian timgm6mb-soundfont (GPL-2)
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # Debian fluid-soundfont-gm (MIT)
    "/usr/share/sounds/sf2/default-GM.sf2",
)
SOUNDFONT_INFO = {
    "TimGM6mb.sf2": "TimGM6mb by Tim Brechbill (GPL-2; Debian timgm6mb-soundfont)",
    "FluidR3_GM.sf2": "Fluid R3 GM by Frank Wen (MIT; Debian fluid-soundfont-gm)",
}
FORMATS = ("midi", "wav", "mp3")


@dataclass(kw_only=True)
class MusicOptions:
    """What a caller may ask for; None means the default (8 bars, the primer's tempo or 100 bpm, a fresh seed)."""

    bars: int | None = None
    seconds: float | None = None
    tempo: float | None = None
    seed: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def check(self) -> None:
        if self.bars is not None and self.seconds is not None:
            raise GenloomError("give the length in bars or in seconds, not both")
        if self.bars is not None and not 1 <= self.bars <= MAX_BARS:
            raise GenloomError(f"length must be 1..{MAX_BARS} bars, got {self.bars}")
        if self.seconds is not None and not (0 < self.seconds <= MAX_SECONDS):
            raise GenloomError(f"length must be more than 0 and at most {MAX_SECONDS:g} seconds, got {self.seconds:g}")
        if self.tempo is not None and not TEMPO_RANGE[0] <= self.tempo <= TEMPO_RANGE[1]:
            raise GenloomError(f"tempo must be {TEMPO_RANGE[0]:g}..{TEMPO_RANGE[1]:g} bpm, got {self.tempo:g}")
        self.sampling(0).check()

    def sampling(self, max_new_tokens: int, seed: int | None = None) -> SamplingParams:
        return SamplingParams(max_new_tokens=max(1, max_new_tokens), temperature=self.temperature, top_k=self.top_k,
                              top_p=self.top_p, min_p=self.min_p, repetition_penalty=self.repetition_penalty,
                              seed=seed, stop_at_eot=False)


@dataclass
class Music:
    """A composed piece: the score (primer + continuation), where the continuation starts, and how it was made."""

    score: symusic.Score
    start_tick: int  # where the new music begins (0 without a primer)
    end_tick: int
    seed: int
    tempo: float
    prompt_tokens: int
    new_tokens: int
    finish_reason: str  # length | token_limit
    compute_seconds: float
    parameters: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Duration of the whole score (primer included) at its tempo."""
        return self.end_tick / self.score.ticks_per_quarter * 60.0 / self.tempo

    def midi(self) -> bytes:
        return self.score.dumps_midi()


def read_primer(path: str | Path) -> bytes:
    """A primer MIDI file's bytes, checked (MIDI, pitched notes) before any sampling."""
    data = Path(path).read_bytes() if Path(path).is_file() else None
    if data is None:
        raise GenloomError(f"primer not found: {path}")
    read_midi(data, str(path))
    return data


def is_music_model(lm) -> bool:
    """Whether a loaded model writes music (its tokenizer is a music tokenizer)."""
    return isinstance(lm.tokenizer, MidiTokenizer)


def require_music_model(lm, name: str) -> MidiTokenizer:
    if not is_music_model(lm):
        raise GenloomError(f"{name} is not a music model (its tokenizer is '{getattr(lm.tokenizer, 'kind', None)}'); "
                           f"train one on music data, e.g. models/chorales")
    return lm.tokenizer


def _window(ids: list[int], block_size: int, bar_id: int | None) -> list[int]:
    """The prompt of the next window: all ids while they fit with room to write, else the last half of the
    context, started at its first bar line (REMI's Bar token) when it holds one."""
    if len(ids) <= block_size // 2:
        return ids
    tail = ids[-(block_size // 2):]
    if bar_id is not None and bar_id in tail[1:]:
        tail = tail[tail.index(bar_id, 1):]
    return tail


def _end_tick(score: symusic.Score, start: int, opts: MusicOptions, tempo: float) -> int | None:
    """The tick where the new music stops: `seconds` after the primer, or the `bars`-th bar line after the
    primer's last one, by the score's own time signatures (None while the score does not reach it yet)."""
    tpq = score.ticks_per_quarter
    if opts.seconds is not None:
        return start + max(1, round(opts.seconds * tempo / 60.0 * tpq))
    bars = opts.bars or DEFAULT_BARS
    downbeats = [int(t) for t in np.asarray(score.get_downbeats())] if score.note_num() else [0]
    first = next((i for i, t in enumerate(downbeats) if t >= start), None)
    if first is None or first + bars >= len(downbeats):
        return None
    return downbeats[first + bars]


def _reached(score: symusic.Score, start: int, opts: MusicOptions, tempo: float) -> int | None:
    """The end tick once a note starts at or after it (the music has moved past the asked length), else None."""
    end = _end_tick(score, start, opts, tempo)
    return end if end is not None and _last_onset(score) >= end else None


def _last_onset(score: symusic.Score) -> int:
    return max((n.time for t in score.tracks for n in t.notes), default=-1)


def _trim(score: symusic.Score, end: int) -> symusic.Score:
    """Notes starting before `end`, cut off at `end`."""
    out = score.copy()
    for t in out.tracks:
        kept = [n for n in t.notes if n.time < end]
        t.notes.clear()
        for n in kept:
            t.notes.append(symusic.Note(n.time, max(1, min(n.duration, end - n.time)), n.pitch, n.velocity))
    return out


def compose(lm, opts: MusicOptions, primer: bytes | symusic.Score | None = None) -> Music:
    """Continue a primer (MIDI bytes or a score) or start from nothing, for the asked length, with one seed."""
    opts.check()
    tok = require_music_model(lm, "the model")
    model = lm.model
    block = model.config.block_size
    if isinstance(primer, bytes):
        primer = read_midi(primer, "the primer")
    prompt = [tok.bos_id] + (tok.encode_score(primer) if primer is not None else [])
    start_score = tok.decode_score(prompt)
    start = max((n.end for t in start_score.tracks for n in t.notes), default=0)
    tempo = opts.tempo or (float(primer.tempos[0].qpm) if primer is not None and len(primer.tempos) else DEFAULT_TEMPO)
    tempo = min(max(tempo, TEMPO_RANGE[0]), TEMPO_RANGE[1])
    seed = opts.seed if opts.seed is not None else secrets.randbelow(2**31)
    quarters = opts.seconds * tempo / 60.0 if opts.seconds is not None else 4 * (opts.bars or DEFAULT_BARS)
    cap = max(64, int(TOKENS_PER_QUARTER_CAP * quarters))
    end = None
    special = {tok.bos_id, tok.eot_id, tok.pad_id}
    ban = allow_only(i for i in range(tok.vocab_size) if i not in special)  # no piece ends before its length
    bar_id = tok.tok.vocab.get("Bar_None")
    ids, new, window, reason = list(prompt), 0, 0, "token_limit"
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        while new < cap and reason != "length":
            ctx = _window(ids, block, bar_id)
            sp = opts.sampling(min(block - len(ctx) + 1, cap - new), (seed + window * WINDOW_SEED_STEP) % 2**63)
            for _, t in stream_ids(model, [ctx], sp, None, [ban]):
                ids.append(int(t[0]))
                new += 1
                if new % CHECK_EVERY == 0:
                    end = _reached(tok.decode_score(ids), start, opts, tempo)
                    if end is not None:
                        reason = "length"
                        break
            window += 1
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - t0
    score = tok.decode_score(ids)
    if end is None:  # the token limit came first: the piece ends where its notes do
        end = max(start + 1, max((n.end for t in score.tracks for n in t.notes), default=0))
    score = _trim(score, end)
    score.tempos.clear()
    score.tempos.append(symusic.Tempo(0, tempo))
    scale = OUTPUT_TPQ / score.ticks_per_quarter
    score = score.resample(OUTPUT_TPQ)
    params = {"bars": opts.bars if opts.seconds is None else None, "seconds": opts.seconds, "tempo": tempo,
              "seed": seed, "temperature": opts.temperature, "top_k": opts.top_k, "top_p": opts.top_p,
              "min_p": opts.min_p, "repetition_penalty": opts.repetition_penalty, "primer": primer is not None}
    if params["bars"] is None and opts.seconds is None:
        params["bars"] = DEFAULT_BARS
    return Music(score, round(start * scale), round(end * scale), seed, tempo, len(prompt), new, reason, seconds,
                 params)


def soundfont() -> Path:
    """The General MIDI soundfont to render with: $GENLOOM_SOUNDFONT, else the first Debian one installed."""
    given = os.environ.get("GENLOOM_SOUNDFONT")
    for path in [given] if given else SOUNDFONTS:
        if Path(path).is_file():
            return Path(path)
    where = f"GENLOOM_SOUNDFONT={given} does not exist; " if given else ""
    raise GenloomError(f"{where}no General MIDI soundfont found: install the Debian package 'timgm6mb-soundfont' "
                       f"(apt-get install --no-install-recommends timgm6mb-soundfont) or set GENLOOM_SOUNDFONT")


def fluidsynth() -> str:
    exe = shutil.which(os.environ.get("GENLOOM_FLUIDSYNTH", "fluidsynth"))
    if not exe:
        raise GenloomError("fluidsynth is missing: install the Debian package 'fluidsynth' "
                           "(apt-get install --no-install-recommends fluidsynth)")
    return exe


def render_wav(midi: bytes, sample_rate: int = SAMPLE_RATE, watermarks: Watermarks | None = None) -> bytes:
    """MIDI bytes -> 16-bit stereo WAV bytes, rendered offline by FluidSynth with the General MIDI soundfont and
    marked with `watermarks` (genloom.safety.watermark) before any encoding."""
    exe, sf2 = fluidsynth(), soundfont()
    with tempfile.TemporaryDirectory(prefix="genloom-music-") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        mid.write_bytes(midi)
        cmd = [exe, "-ni", "-q", "-g", "0.8", "-r", str(sample_rate), "-T", "wav", "-O", "s16", "-F", str(wav),
               str(sf2), str(mid)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if res.returncode != 0 or not wav.is_file():
            raise GenloomError(f"fluidsynth failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
        return mark_wav(wav.read_bytes(), watermarks)


def wav_to_mp3(wav_bytes: bytes, kbps: int = 128) -> bytes:
    """16-bit WAV -> MP3 with LAME (lameenc)."""
    import lameenc  # an optional output: only loaded when MP3 is asked for

    with wave.open(io.BytesIO(wav_bytes)) as w:
        channels, rate, pcm = w.getnchannels(), w.getframerate(), w.readframes(w.getnframes())
    enc = lameenc.Encoder()
    enc.set_bit_rate(kbps)
    enc.set_in_sample_rate(rate)
    enc.set_channels(channels)
    enc.set_quality(2)
    return bytes(enc.encode(pcm) + enc.flush())


def audio(music: Music, response_format: str, wav_filter=None, watermarks: Watermarks | None = None) -> bytes:
    """The piece as midi, wav or mp3 bytes, watermarked when `watermarks` are given; `wav_filter(wav) -> wav` (an
    audible cue) runs before MP3 encoding."""
    if response_format not in FORMATS:
        raise GenloomError(f"unknown format '{response_format}'; choose one of {choices(FORMATS)}")
    if response_format == "midi":
        return music.midi()
    wav = render_wav(music.midi(), watermarks=watermarks)
    wav = wav_filter(wav) if wav_filter else wav
    return wav if response_format == "wav" else wav_to_mp3(wav)


def piano_roll_png(music: Music) -> bytes:
    """Pitch over time, one bar per note: the primer grey, the new music blue, the seam a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tpq = music.score.ticks_per_quarter
    sec = 60.0 / music.tempo / tpq
    notes = [n for t in music.score.tracks for n in t.notes]
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    for primer, colour in ((True, "#9a9a9a"), (False, "#2a6fdb")):
        bars = [(n.time * sec, n.duration * sec) for n in notes if (n.time < music.start_tick) == primer]
        pitches = [n.pitch for n in notes if (n.time < music.start_tick) == primer]
        for (x, w), p in zip(bars, pitches):
            ax.broken_barh([(x, w)], (p - 0.4, 0.8), facecolors=colour)
    if music.start_tick:
        ax.axvline(music.start_tick * sec, color="#444", linestyle="--", linewidth=1)
    pitches = [n.pitch for n in notes] or [60]
    ax.set_ylim(min(pitches) - 2, max(pitches) + 2)
    ax.set_xlim(0, max(music.end_tick * sec, 1e-3))
    ax.set_xlabel("seconds")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(f"seed {music.seed}, {music.tempo:g} bpm" + (" (grey: primer)" if music.start_tick else ""))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(music: Music, out_dir: str | Path, stem: str, mp3: bool = False, wav: bool = True,
                  finish=None, wav_filter=None, watermarks: Watermarks | None = None) -> list[Path]:
    """stem.mid, stem.wav (FluidSynth, watermarked when `watermarks` are given), stem.mp3 (when asked), stem.png
    (piano roll) in out_dir; `wav_filter` runs on the rendered WAV before MP3 encoding, `finish(data, suffix, path)
    -> data` (the caller's labels) on each file's bytes before it is written."""
    out = Path(out_dir)
    files = {".mid": music.midi()}
    if wav or mp3:
        wav_bytes = render_wav(files[".mid"], watermarks=watermarks)
        wav_bytes = wav_filter(wav_bytes) if wav_filter else wav_bytes
        if wav:
            files[".wav"] = wav_bytes
        if mp3:
            files[".mp3"] = wav_to_mp3(wav_bytes)
    files[".png"] = piano_roll_png(music)
    paths = []
    for suffix, data in files.items():
        path = out / f"{stem}{suffix}"
        atomic_write_bytes(path, finish(data, suffix, path) if finish else data)
        paths.append(path)
    return paths
