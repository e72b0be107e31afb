"""Float32 mono audio -> the bytes of an audio format, whole or chunk by chunk as it is made.

wav: 16-bit PCM RIFF (a streamed one says "length unknown", 0xFFFFFFFF, as streaming WAV servers do); pcm: raw
16-bit little-endian samples at the voice's rate; flac and Ogg/Opus: libsndfile through soundfile (Opus only runs at
8/12/16/24/48 kHz, so audio at other rates is resampled to 48 kHz with scipy's polyphase filter); mp3: LAME through
lameenc (mono, 64 kbit/s).
"""

from __future__ import annotations

import io
import math
import struct

import lameenc
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from genloom.errors import GenloomError, choices
from genloom.safety import labels
from genloom.safety.marks import add_tone_cue
from genloom.safety.watermark import Watermarks, mark_audio

FORMATS = ("wav", "flac", "mp3", "opus", "pcm")
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "opus": "audio/ogg",
               "pcm": "audio/pcm"}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MP3_KBPS = 64


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise GenloomError(f"unsupported audio format '{fmt}'; choose one of {choices(FORMATS)}")
    return fmt


def _int16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_header(rate: int, n_bytes: int | None) -> bytes:
    """A 44-byte RIFF/WAVE header for 16-bit mono; n_bytes None: a stream of unknown length."""
    data = 0xFFFFFFFF if n_bytes is None else n_bytes
    riff = 0xFFFFFFFF if n_bytes is None else 36 + n_bytes
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", riff, b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16,
                       b"data", data)


class Encoder:
    """`add(chunk)` returns the bytes ready so far, `finish()` the rest: their concatenation is one valid file."""

    def __init__(self, fmt: str, rate: int, *, streaming: bool = True):
        self.fmt, self.rate, self.streaming = check_format(fmt), int(rate), streaming
        self.started, self.sent, self.pcm = False, 0, []
        if fmt == "mp3":
            self.lame = lameenc.Encoder()
            self.lame.set_bit_rate(MP3_KBPS)
            self.lame.set_in_sample_rate(self.rate)
            self.lame.set_channels(1)
            self.lame.set_quality(2)
        elif fmt in ("flac", "opus"):
            self.out_rate = self.rate if fmt == "flac" or self.rate in OPUS_RATES else 48000
            self.buffer = io.BytesIO()
            self.file = sf.SoundFile(self.buffer, "w", samplerate=self.out_rate, channels=1,
                                     format="FLAC" if fmt == "flac" else "OGG",
                                     subtype="PCM_16" if fmt == "flac" else "OPUS")

    def _new_bytes(self) -> bytes:
        data = self.buffer.getvalue()[self.sent:]
        self.sent += len(data)
        return data

    def add(self, audio: np.ndarray) -> bytes:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if self.fmt == "pcm":
            return _int16(audio)
        if self.fmt == "wav":
            if not self.streaming:  # the whole file: the header needs the length, so keep the samples
                self.pcm.append(_int16(audio))
                return b""
            head, self.started = (b"" if self.started else wav_header(self.rate, None)), True
            return head + _int16(audio)
        if self.fmt == "mp3":
            return bytes(self.lame.encode(_int16(audio)))
        if self.out_rate != self.rate:
            g = math.gcd(self.out_rate, self.rate)
            audio = resample_poly(audio, self.out_rate // g, self.rate // g).astype(np.float32)
        self.file.write(np.clip(audio, -1.0, 1.0))
        return self._new_bytes() if self.streaming else b""

    def finish(self) -> bytes:
        if self.fmt == "pcm":
            return b""
        if self.fmt == "wav":
            if self.streaming:
                return b"" if self.started else wav_header(self.rate, None)
            data = b"".join(self.pcm)
            return wav_header(self.rate, len(data)) + data
        if self.fmt == "mp3":
            return bytes(self.lame.flush())
        self.file.close()
        if not self.streaming:
            return self.buffer.getvalue()
        return self._new_bytes()


def encode(audio: np.ndarray, rate: int, fmt: str) -> bytes:
    """A whole clip as one file of `fmt`."""
    enc = Encoder(fmt, rate, streaming=False)
    return enc.add(audio) + enc.finish()


LABEL_FORMATS = {"wav": "wav", "flac": "flac", "mp3": "mp3", "opus": "ogg"}  # pcm: raw samples carry no metadata


def finish(audio: np.ndarray, rate: int, fmt: str, meta: labels.OutputMeta, labeler: labels.Labeler,
           marks: Watermarks | None) -> bytes:
    """A whole clip as a file people may publish: the audible cue first (when switched on), the installation's
    watermark over all of it, encoded, then its GB 45438 label and C2PA manifest (not for raw pcm: it has no
    metadata; the API sends its `aigc` record in a header, the CLI in aigc-log.jsonl)."""
    if labeler.policy.audio_cue:
        audio = add_tone_cue(audio, rate)
    data = encode(mark_audio(audio, rate, marks), rate, fmt)
    return labels.label_bytes(data, LABEL_FORMATS[fmt], meta, labeler) if fmt in LABEL_FORMATS else data
