"""Watermarks on by default: the installation's secret, the hooks the pipelines and the server call, detectors.

The secret is 32 random bytes in `<data dir>/watermark.key` (hex, mode 0600), created once, atomically (a hard
link that fails if another process made the file first: both then use the winner's), or the file an operator
names in GENLOOM_WATERMARK_KEY_FILE. It never appears in outputs or logs; everything derived from it is a
one-way HMAC. Marks: text (watermark_text, Kirchenbauer et al. 2023), images (watermark_image), audio
(watermark_audio). A `Watermarks` with no secret is "off": the doors log a warning when an operator says so.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genloom.errors import GenloomError
from genloom.safety import watermark_audio, watermark_image
from genloom.safety.watermark_text import TextWatermark, detect_text, hash_key

log = logging.getLogger("genloom.safety")
KEY_FILE = "watermark.key"
KEY_ENV = "GENLOOM_WATERMARK_KEY_FILE"
MODES = ("on", "off")


class Secret:
    """The installation's secret bytes; its repr and str never show them."""

    def __init__(self, raw: bytes):
        self.raw = raw

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__


def _read_key(path: Path) -> Secret:
    try:
        text = path.read_text(encoding="ascii").strip()
        raw = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise GenloomError(f"watermark key {path}: not readable as hex ({type(e).__name__})") from None
    if len(raw) < 16:
        raise GenloomError(f"watermark key {path}: {len(raw)} bytes; give at least 16 (32 hex digits)")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("watermark key %s can be read by other users: chmod 600 it", path)
    return Secret(raw)


def installation_key(data_dir: str | Path) -> Secret:
    """GENLOOM_WATERMARK_KEY_FILE's key, else data_dir/watermark.key, made now if there is none."""
    given = os.environ.get(KEY_ENV)
    if given:
        if not Path(given).is_file():
            raise GenloomError(f"{KEY_ENV} names {given}, which is not a file")
        return _read_key(Path(given))
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(secrets.token_hex(32) + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic and never over another process's key
                log.info("watermark: created the installation key %s", path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    return _read_key(path)


def existing_key(data_dir: str | Path | None) -> Secret | None:
    """The installation's key when there is one (never made here): what a provenance check reads marks with."""
    if os.environ.get(KEY_ENV) or (data_dir is not None and (Path(data_dir) / KEY_FILE).is_file()):
        return installation_key(data_dir or ".")
    return None


@dataclass(frozen=True)
class Watermarks:
    """What a door hands the pipelines: the secret, or None when watermarks are off."""

    secret: Secret | None

    @property
    def on(self) -> bool:
        return self.secret is not None

    def text(self, vocab: int) -> TextWatermark | None:
        return TextWatermark(hash_key(self.secret.raw), vocab) if self.on else None

    def processors(self, vocab: int) -> list:
        """The logits processors one generation call adds (a fresh, stateful one per call)."""
        return [self.text(vocab).processor()] if self.on else []


OFF = Watermarks(None)


def load(data_dir: str | Path, mode: str = "on", *, where: str = "genloom") -> Watermarks:
    """The doors' watermarks: on (the installation key) or off (logged as a warning)."""
    if mode not in MODES:
        raise GenloomError(f"unknown watermark mode '{mode}'; choose one of {', '.join(MODES)}")
    if mode == "off":
        log.warning("%s: watermarks are OFF: text, images and audio are written without an invisible mark", where)
        return OFF
    return Watermarks(installation_key(data_dir))


# ---- the hooks: one function per kind of output ----------------------------------------------------
def mark_images(images: torch.Tensor, marks: Watermarks | None) -> torch.Tensor:
    """uint8 (n, C, H, W) images, marked before they are encoded (the images pipeline's one hook)."""
    if marks is None or not marks.on:
        return images
    return torch.stack([torch.from_numpy(watermark_image.embed(img.permute(1, 2, 0).cpu().numpy(), marks.secret.raw))
                        .permute(2, 0, 1) for img in images]).to(images.device)


def audio_stream(marks: Watermarks | None, sample_rate: int) -> watermark_audio.ChipStream | None:
    """One streamed clip's sequence (its pieces passed to mark_audio in order); None when watermarks are off."""
    if marks is None or not marks.on:
        return None
    return watermark_audio.ChipStream(marks.secret.raw, sample_rate)


def mark_audio(samples: np.ndarray, sample_rate: int, marks: Watermarks | None,
               stream: watermark_audio.ChipStream | None = None) -> np.ndarray:
    """Audio samples (n,) or (n, channels), float or int16, marked; what speech routes call before encoding.
    `stream` (audio_stream): a streamed answer's sentences, marked in order, carry one sequence."""
    if marks is None or not marks.on:
        return samples
    return watermark_audio.embed(samples, sample_rate, marks.secret.raw, stream)


def mark_wav(wav: bytes, marks: Watermarks | None) -> bytes:
    """A 16-bit WAV file's bytes, marked (the music pipeline's render)."""
    if marks is None or not marks.on:
        return wav
    samples, rate = watermark_audio.read_audio(wav)
    return watermark_audio.wav_bytes(watermark_audio.embed(samples, rate, marks.secret.raw), rate)


# ---- detectors ----------------------------------------------------------------------------------
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")
AUDIO_MAGIC = (b"ID3", b"fLaC", b"OggS", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"\xff\xe3")


def kind_of(data: bytes) -> str:
    """image, audio or text, by the bytes' content."""
    if data.startswith(IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return "image"
    if data.startswith(AUDIO_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WAVE"):
        return "audio"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise GenloomError("not an image (PNG, JPEG, WebP, GIF, BMP), audio (WAV, MP3, FLAC, Ogg) or UTF-8 text")
    return "text"


def detect_image(data: bytes, secret: Secret) -> dict:
    return watermark_image.detect(watermark_image.read_image(data), secret.raw)


def detect_audio(data: bytes, secret: Secret) -> dict:
    samples, rate = watermark_audio.read_audio(data)
    return watermark_audio.detect(samples, rate, secret.raw)


def detect_bytes(data: bytes, secret: Secret, *, tokenizer=None, vocab: int | None = None) -> dict:
    """The watermark report of a file's bytes: image, audio or (with the model's tokenizer) text."""
    kind = kind_of(data)
    if kind == "image":
        return detect_image(data, secret)
    if kind == "audio":
        return detect_audio(data, secret)
    if tokenizer is None or vocab is None:
        raise GenloomError("a text's watermark is read with the model's tokenizer: name the model (--model)")
    return detect_text(data.decode("utf-8"), tokenizer, TextWatermark(hash_key(secret.raw), vocab))


def detect_file(path: str | Path, secret: Secret, *, tokenizer=None, vocab: int | None = None) -> dict:
    """detect_bytes on a file (what `genloom provenance` adds to its report)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise GenloomError(f"{path}: {e.strerror or e}") from None
    return {"file": str(path), **detect_bytes(data, secret, tokenizer=tokenizer, vocab=vocab)}


__all__ = [
    "OFF",
    "Secret",
    "Watermarks",
    "detect_bytes",
    "detect_file",
    "detect_text",
    "existing_key",
    "installation_key",
    "kind_of",
    "load",
    "audio_stream",
    "mark_audio",
    "mark_images",
    "mark_wav",
]
