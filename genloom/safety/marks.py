"""GB 45438-2025 explicit labels: the visible mark on images and the audible cue before audio.

The mark is text ("AI生成 AI-generated" by default) on a translucent box in a corner, its letters at least 5% of
the image's shorter side (GB 45438-2025, 4.1 b); it needs a CJK font (Debian `fonts-wqy-microhei` or
`fonts-noto-cjk`). The cue is two short beeps (880 Hz, 1320 Hz) before the sound.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from genloom.errors import GenloomError

FONT_PACKAGE = "fonts-wqy-microhei"
FONT_PATHS = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
              "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
TEXT_NOTICE = "【AI生成 / AI-generated】"


def cjk_font_path() -> str:
    for p in FONT_PATHS:
        if Path(p).is_file():
            return p
    if shutil.which("fc-match"):
        out = subprocess.run(["fc-match", "-f", "%{file}", ":lang=zh-cn"], capture_output=True, text=True,
                             check=False).stdout
        if out and Path(out).is_file() and Path(out).suffix.lower() in (".ttc", ".ttf", ".otf"):
            return out
    raise GenloomError(f"the visible mark needs a CJK font: apt-get install {FONT_PACKAGE} (or fonts-noto-cjk), "
                     "or switch the mark off with --no-visible-mark")


def mark_height(width: int, height: int) -> int:
    """Text height of the mark: at least 5% of the shorter side (GB 45438-2025, 4.1 b), and at least 8 px (legible
    on the 28-64 px images small models make)."""
    return max(8, math.ceil(0.05 * min(width, height)))


def visible_mark(img: Image.Image, text: str, position: str = "bottom-right") -> Image.Image:
    """The image with `text` drawn in a corner on a translucent dark box, letters at least 5% of the shorter side;
    on a small image too narrow for all of it, its first word alone rather than smaller letters."""
    mode = img.mode
    base = img.convert("RGBA")
    w, h = base.size
    size = mark_height(w, h)
    font = ImageFont.truetype(cjk_font_path(), size)
    lines = [text]
    draw = ImageDraw.Draw(base)
    if draw.textlength(text, font=font) > w - 2:  # too wide: its first word alone ("AI生成", the standard's words)
        lines = text.split()[:1]
    pad = max(1, size // 5)
    box_w = int(max(draw.textlength(ln, font=font) for ln in lines)) + 2 * pad
    line_h = size + pad
    box_h = line_h * len(lines) + pad
    x = w - box_w if position.endswith("right") else 0
    y = h - box_h if position.startswith("bottom") else 0
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    od = ImageDraw.Draw(overlay)
    od.rectangle([x, y, x + box_w, y + box_h], fill=(0, 0, 0, 140))
    for i, ln in enumerate(lines):
        od.text((x + pad, y + pad + i * line_h), ln, font=font, fill=(255, 255, 255, 255), anchor="la")
    out = Image.alpha_composite(base, overlay)
    return out.convert(mode if mode in ("RGB", "RGBA", "L") else "RGB")


def tone_cue(sample_rate: int, seconds: float = 0.4) -> np.ndarray:
    """Two short sine beeps (880 Hz then 1320 Hz) with faded edges: the audible AIGC cue, float32 in [-0.3, 0.3]."""
    n = int(sample_rate * seconds / 2)
    t = np.arange(n) / sample_rate
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    beeps = [0.3 * np.sin(2 * np.pi * f * t) * fade for f in (880.0, 1320.0)]
    return np.concatenate([*beeps, np.zeros(n // 2)]).astype(np.float32)


def add_tone_cue(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Samples (T,) or (T, C) float with the cue before them (what speech routes call before encoding)."""
    cue = tone_cue(sample_rate)
    if samples.ndim == 2:
        cue = np.repeat(cue[:, None], samples.shape[1], axis=1)
    return np.concatenate([cue.astype(samples.dtype), samples])


def add_tone_cue_wav(wav_bytes: bytes) -> bytes:
    """A 16-bit PCM WAV with the cue before its samples (the music renderer's WAV, before MP3 encoding)."""
    with wave.open(io.BytesIO(wav_bytes)) as w:
        ch, rate, width = w.getnchannels(), w.getframerate(), w.getsampwidth()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, ch)
    if width != 2:
        raise GenloomError(f"the audio cue needs 16-bit PCM WAV, got {8 * width}-bit")
    cue = (add_tone_cue(np.zeros((0, ch), np.float32), rate) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(ch), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(np.concatenate([cue, pcm]).tobytes())
    return buf.getvalue()
