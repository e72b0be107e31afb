"""Speech recognition: Whisper (Radford et al. 2022, arXiv:2212.04356) through faster-whisper on CTranslate2, with
pocketsphinx (CMU Sphinx) as the fallback when no Whisper folder is there. One `transcribe` for the CLI, the
/v1/audio routes, `genloom eval --audio` and anything else that needs to read speech; audio is decoded by PyAV
(FFmpeg): WAV, FLAC, MP3, Ogg (Vorbis, Opus), M4A/AAC, WebM, whatever the decoder handles.

    asr = load_asr("models/asr-whisper-base")      # or "whisper-base", "pocketsphinx", None (the default)
    r = asr.transcribe("clip.wav", language="en", word_timestamps=True)
    r.text, r.language, r.duration, r.segments[0].start, r.words[0].word
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from genloom.errors import GenloomError, choices
from genloom.files import ROOT
from genloom.metrics import audio as audio_metrics

SAMPLE_RATE = 16000  # what Whisper and the pocketsphinx model take
TASKS = ("transcribe", "translate")
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
BEAM_SIZE = 5  # Whisper's own CLI default
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # temperature 0: Whisper's fallback schedule (OpenAI's rule)
NAMES = {"whisper-base": ROOT / "models" / "asr-whisper-base"}  # short names -> where scripts/setup.sh imports them
DEFAULT = "whisper-base"
POCKETSPHINX = "pocketsphinx"
WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json")  # a CTranslate2 Whisper folder


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    temperature: float | None = None
    tokens: list[int] = field(default_factory=list)


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float | None = None


@dataclass
class Transcription:
    """What a clip says: the text, its language (ISO 639-1), seconds of audio, timed segments and (when asked) words."""

    text: str
    language: str
    duration: float
    segments: list[Segment]
    words: list[Word]
    task: str = "transcribe"
    model: str = ""
    compute_seconds: float = 0.0  # wall time spent decoding (the audio already in memory)


def is_whisper_folder(path) -> bool:
    p = Path(path)
    return p.is_dir() and all((p / f).is_file() for f in WHISPER_FILES)


def decode(source) -> np.ndarray:
    """Audio -> mono float32 at 16 kHz with PyAV (FFmpeg), as Whisper takes it.

    `source`: a path, bytes, a binary file object, a float array already at 16 kHz, or (samples, sample_rate)."""
    if isinstance(source, tuple):
        x, sr = source
        x = audio_metrics.resample(x, int(sr), SAMPLE_RATE).astype(np.float32)
    elif isinstance(source, np.ndarray):
        x = source.astype(np.float32)
    else:
        try:
            from faster_whisper.audio import decode_audio
        except ImportError:
            raise GenloomError("reading audio needs faster-whisper (and PyAV): pip install faster-whisper av") from None
        name = str(source) if isinstance(source, (str, Path)) else "the upload"
        if isinstance(source, (str, Path)) and not Path(source).is_file():
            raise GenloomError(f"audio file not found: {source}")
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise GenloomError("the upload is empty (0 bytes)")
            source = io.BytesIO(source)
        try:
            x = decode_audio(source, sampling_rate=SAMPLE_RATE)
        except (ValueError, OSError, IndexError, StopIteration) as e:  # av.error.InvalidDataError is a ValueError
            why = f": {str(e).splitlines()[0]}" if isinstance(e, (ValueError, OSError)) and str(e) else " (no audio stream)"
            raise GenloomError(f"{name} is not audio that can be decoded (WAV, FLAC, MP3, Ogg, M4A, WebM){why}") from None
    if x.ndim != 1 or x.size == 0:
        raise GenloomError("the audio is empty (no samples)" if x.size == 0 else "the audio must be one channel")
    return x


class AsrModel:
    """A loaded speech recognizer (Whisper via faster-whisper, or pocketsphinx); calls are serialised by a lock."""

    def __init__(self, name: str, engine: str, model=None, path: Path | None = None, card: dict | None = None):
        self.name, self.engine, self.model, self.path = name, engine, model, path
        self.card = card or {}
        self.lock = threading.Lock()

    @property
    def languages(self) -> tuple[str, ...]:
        if self.engine == POCKETSPHINX:
            return ("en",)
        return tuple(self.model.supported_languages)

    def protocol(self, *, beam_size: int = BEAM_SIZE, temperature: float = 0.0, language: str | None = None,
                 fallback: bool = True) -> str:
        """How this model decodes, for reports."""
        if self.engine == POCKETSPHINX:
            return audio_metrics.asr_protocol().split("; WER")[0]
        temps = ("0 with fallback to 0.2..1.0 on failed segments" if temperature == 0 and fallback
                 else f"{temperature} (no fallback)")
        return (f"Whisper {self.name} via faster-whisper {_version('faster-whisper')} / CTranslate2 "
                f"{_version('ctranslate2')}, int8 on CPU, beam size {beam_size}, temperature {temps}, "
                f"language {language or 'detected'}, no VAD filter, audio decoded by PyAV to {SAMPLE_RATE} Hz mono")

    def transcribe(self, source, *, language: str | None = None, task: str = "transcribe", prompt: str | None = None,
                   temperature: float = 0.0, word_timestamps: bool = False,
                   beam_size: int = BEAM_SIZE, fallback: bool = True) -> Transcription:
        """Transcribe (or translate into English) one clip; see the module docstring for `source`.

        Temperature 0 decodes by beam search and, where a segment fails Whisper's checks (compression ratio
        > 2.4, mean log-probability < -1), samples again at 0.2, 0.4, ... 1.0 (OpenAI's rule; random, so runs
        can differ); `fallback=False` keeps the beam-search result alone, the same on every run."""
        if task not in TASKS:
            raise GenloomError(f"unknown task '{task}'; choose one of {choices(TASKS)}")
        if not 0.0 <= temperature <= 1.0:
            raise GenloomError(f"temperature must be between 0 and 1, got {temperature}")
        if language is not None and language not in self.languages:
            raise GenloomError(f"unknown language '{language}' for {self.name}; choose one of {choices(self.languages)}")
        x = decode(source)
        t0 = time.perf_counter()
        with self.lock:
            if self.engine == POCKETSPHINX:
                out = self._pocketsphinx(x, task)
            else:
                out = self._whisper(x, language, task, prompt, temperature, word_timestamps, beam_size, fallback)
        out.compute_seconds = time.perf_counter() - t0
        out.model, out.task = self.name, task
        if not word_timestamps:
            out.words = []
        return out

    def _whisper(self, x, language, task, prompt, temperature, word_timestamps, beam_size, fallback) -> Transcription:
        temps = list(FALLBACK_TEMPERATURES) if temperature == 0 and fallback else [temperature]
        segs, info = self.model.transcribe(x, language=language, task=task, initial_prompt=prompt or None,
                                           temperature=temps, beam_size=beam_size, word_timestamps=word_timestamps,
                                           vad_filter=False)
        segments, words = [], []
        for i, s in enumerate(segs):  # a generator: decoding happens here
            segments.append(Segment(i, _num(s.start), _num(s.end), s.text.strip(), float(s.avg_logprob),
                                    float(s.no_speech_prob), float(s.compression_ratio), float(s.temperature),
                                    [int(t) for t in s.tokens]))
            words += [Word(w.word.strip(), _num(w.start), _num(w.end), float(w.probability)) for w in s.words or ()]
        text = " ".join(s.text for s in segments if s.text).strip()
        return Transcription(text, info.language, round(x.size / SAMPLE_RATE, 3), segments, words)

    def _pocketsphinx(self, x, task) -> Transcription:
        if task != "transcribe":
            raise GenloomError("pocketsphinx cannot translate; import Whisper: genloom import-asr whisper-base "
                               "--out models/asr-whisper-base")
        res = audio_metrics.transcribe(x, SAMPLE_RATE)
        seconds = round(x.size / SAMPLE_RATE, 3)
        words = [Word(w["word"], w["start"], w["end"]) for w in res.get("words", [])]
        segments = [Segment(0, 0.0, seconds, res["text"])] if res["text"] else []
        return Transcription(res["text"], "en", seconds, segments, words)


def _num(seconds) -> float:
    return round(float(seconds), 3)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def resolve(name_or_path: str | None = None) -> Path | str:
    """A model folder for a name or path; None means whisper-base when imported, else pocketsphinx."""
    if name_or_path is None:
        return NAMES[DEFAULT] if is_whisper_folder(NAMES[DEFAULT]) else POCKETSPHINX
    if name_or_path == POCKETSPHINX:
        return POCKETSPHINX
    if name_or_path in NAMES:
        path = NAMES[name_or_path]
        if not is_whisper_folder(path):
            raise GenloomError(f"{name_or_path} is not imported yet: genloom import-asr {name_or_path} --out {path}")
        return path
    path = Path(name_or_path)
    if not path.exists():
        raise GenloomError(f"speech recognition model not found: {name_or_path}; give a folder, or one of "
                           f"{choices([*NAMES, POCKETSPHINX])}")
    if not is_whisper_folder(path):
        raise GenloomError(f"{path} is not a speech recognition model (a CTranslate2 Whisper folder holds "
                           f"{', '.join(WHISPER_FILES)}); import one with genloom import-asr whisper-base --out DIR")
    return path


def load_asr(name_or_path: str | Path | None = None, *, threads: int = 0) -> AsrModel:
    """Load a speech recognizer: a CTranslate2 Whisper folder, a short name (whisper-base, pocketsphinx), or None
    for the default (whisper-base when imported, else pocketsphinx). `threads`: CPU threads (0: up to 4)."""
    where = resolve(None if name_or_path is None else str(name_or_path))
    if where == POCKETSPHINX:
        return AsrModel(POCKETSPHINX, POCKETSPHINX, card={"kind": "speech-to-text", "source": "PyPI pocketsphinx"})
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise GenloomError("Whisper needs faster-whisper: pip install faster-whisper") from None
    card_file = where / "card.json"
    card = json.loads(card_file.read_text(encoding="utf-8")) if card_file.is_file() else {}
    try:
        model = WhisperModel(str(where), device="cpu", compute_type="int8",
                             cpu_threads=threads or min(4, os.cpu_count() or 1))
    except (RuntimeError, ValueError, OSError) as e:
        raise GenloomError(f"cannot load the Whisper model in {where}: {str(e).splitlines()[0]}") from None
    return AsrModel(where.resolve().name, "faster-whisper", model, where, card)


# ---- output formats (the CLI and /v1/audio/transcriptions share them) -----------------------------------------
def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(r: Transcription) -> str:
    """SubRip: numbered cues, HH:MM:SS,mmm."""
    return "".join(f"{i}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{s.text}\n\n"
                   for i, s in enumerate(r.segments, 1))


def to_vtt(r: Transcription) -> str:
    """WebVTT: the header, then cues with HH:MM:SS.mmm."""
    return "WEBVTT\n\n" + "".join(f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{s.text}\n\n" for s in r.segments)


def usage(r: Transcription) -> dict:
    return {"type": "duration", "seconds": math.ceil(r.duration)}


def to_json(r: Transcription, fmt: str = "json", granularities=("segment",)) -> dict:
    """OpenAI's transcription object (json) or its verbose form (verbose_json: segments, and words when asked)."""
    if fmt == "json":
        return {"text": r.text, "usage": usage(r)}
    out = {"task": r.task, "language": r.language, "duration": r.duration, "text": r.text}
    if "segment" in granularities or not granularities:
        out["segments"] = [{**asdict(s), "seek": 0} for s in r.segments]
    if "word" in granularities:
        out["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in r.words]
    return {**out, "usage": usage(r)}


def render(r: Transcription, fmt: str, granularities=("segment",)) -> str:
    """The transcription as the text of one response format."""
    if fmt not in FORMATS:
        raise GenloomError(f"unknown response format '{fmt}'; choose one of {choices(FORMATS)}")
    if fmt == "text":
        return r.text + "\n"
    if fmt == "srt":
        return to_srt(r)
    if fmt == "vtt":
        return to_vtt(r)
    return json.dumps(to_json(r, fmt, granularities), ensure_ascii=False, indent=None if fmt == "json" else 2)
