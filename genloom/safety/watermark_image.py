"""Image watermark for small images: keyed signs on low/mid-frequency DCT coefficients of the luminance.

Why our own: genloom's images are 28x28 to 64x64; `invisible-watermark`'s dwtDct/dwtDctSvd embed bits in
4x4 blocks of a DWT sub-band and RivaGAN works on 256x256 crops, and on our sizes their bits do not survive a
resize by 0.5 (bench/watermark.py measures it). This mark is zero-bit (is it marked with this key?) and
scale-free: the 2-D DCT coefficient (u, v) of an image means the same spatial frequency at any size, so a
resized copy is read at its own size. The key draws a sign for each of the K coefficients with
3 <= u + v <= 11 (u, v <= 9); embedding moves each coefficient the least that gives it its sign with a margin
(informed embedding, a few passes against clipping), capped so the change stays faint. Detection counts sign
agreements (Binomial(K, 1/2) for an unmarked image or another key) over a small search of crop hypotheses
(visible fraction 1, 0.95, 0.9 per axis at offsets in steps of 0.025: 81 frames), Bonferroni-corrected,
and reports the corrected one-sided z.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import math
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy.fft import dctn, idctn
from scipy.stats import binom, norm

from genloom.errors import GenloomError

METHOD = "genloom-dct-sign-v1"
MAX_UV, MIN_SUM, MAX_SUM = 12, 2, 14
MARGIN = 2.0  # pixel levels: each coefficient's sign held with this amplitude
CAP = 3.0  # pixel levels: a coefficient larger than this in the picture is left alone (and not read)
PASSES = 3
Z_THRESHOLD = 4.0
MIN_SIDE = 4
LUMA = np.array([0.299, 0.587, 0.114])


def band(limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The (u, v) indices of the band with u, v <= limit."""
    uv = [(u, v) for u in range(limit + 1) for v in range(limit + 1) if MIN_SUM <= u + v <= MAX_SUM]
    return np.array([u for u, _ in uv], dtype=int), np.array([v for _, v in uv], dtype=int)


@lru_cache(maxsize=16)
def signs(secret: bytes) -> np.ndarray:
    """The key's sign for every (u, v) up to MAX_UV: (MAX_UV + 1, MAX_UV + 1) of +-1."""
    seed = hmac.new(secret, b"genloom image watermark v1", hashlib.sha256).digest()
    rng = np.random.default_rng(np.frombuffer(seed, dtype=np.uint32))
    return rng.choice([-1.0, 1.0], size=(MAX_UV + 1, MAX_UV + 1))


def _luma(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float64)
    return img[..., 0] if img.shape[-1] == 1 else img[..., :3] @ LUMA


def embed(img: np.ndarray, secret: bytes) -> np.ndarray:
    """uint8 (H, W, C) with C 1 or 3 -> the same, marked in its luminance (the change added to every channel)."""
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise GenloomError(f"image watermark: images need at least {MIN_SIDE}x{MIN_SIDE} pixels (got {w}x{h})")
    U, V = band(min(MAX_UV, (min(h, w) + 1) // 2 - 1))  # what a copy resized by 0.5 can still hold
    s = signs(secret)[U, V]
    K = len(U)
    scale = math.sqrt(h * w) / 2  # an orthonormal DCT coefficient per pixel level of its cosine
    base = img.astype(np.float64)
    y0 = _luma(img)
    c0 = dctn(y0, norm="ortho")[U, V]
    hopeful = np.abs(c0) <= CAP * scale  # a coefficient of the picture's own larger than CAP is left alone
    delta, moved = np.zeros((h, w)), np.zeros(K)
    for _ in range(PASSES):  # clipping at 0 and 255 eats some of the change: measure again and top it up
        y = _luma(np.clip(np.round(base + delta[..., None]), 0, 255))
        c = dctn(y, norm="ortho")[U, V]
        need = np.where(hopeful, np.clip(MARGIN * scale - s * c, 0, (MARGIN + CAP) * scale - moved), 0)
        if not need.any():
            break
        moved += need
        d = np.zeros((h, w))
        d[U, V] = s * need
        delta += idctn(d, norm="ortho")
    out = np.clip(np.round(base + delta[..., None]), 0, 255).astype(np.uint8)
    assert out.shape == img.shape and np.abs(_luma(out) - y0).max() < 255
    return out


def _frames():
    """(fy, oy, fx, ox): the visible fraction and offset of the original frame a suspect may be, per axis."""
    axis = [(1.0, 0.0)] + [(0.95, o) for o in (0.0, 0.025, 0.05)] + [(0.9, o) for o in (0.0, 0.025, 0.05, 0.075, 0.1)]
    return [(fy, oy, fx, ox) for fy, oy in axis for fx, ox in axis]


FRAMES = _frames()


def _frame_coefficients(y: np.ndarray, H: int, W: int, top: int, left: int) -> np.ndarray:
    """The band's DCT coefficients of an H x W frame of which `y` is the window at (top, left), the rest of the
    frame filled with the window's mean."""
    canvas = np.full((H, W), y.mean())
    canvas[top : top + y.shape[0], left : left + y.shape[1]] = y
    return dctn(canvas, norm="ortho")


def detect(img: np.ndarray, secret: bytes) -> dict:
    """The mark's report for uint8 (H, W, C): agreements of the best frame, the Bonferroni-corrected p and z."""
    y = _luma(img)
    h, w = y.shape
    if min(h, w) < MIN_SIDE:
        raise GenloomError(f"image watermark: an image of {w}x{h} is too small to read (at least {MIN_SIDE}x{MIN_SIDE})")
    U, V = band(min(MAX_UV, min(h, w) - 1))
    s, best = signs(secret)[U, V], (1.0, None, 0, 0)
    for fy, oy, fx, ox in FRAMES:
        H, W = round(h / fy), round(w / fx)
        top, left = min(round(oy * H), H - h), min(round(ox * W), W - w)
        c = _frame_coefficients(y, H, W, top, left)[U, V] / (math.sqrt(H * W) / 2)  # in pixel levels: the same at any size
        read = np.abs(c) <= CAP  # the coefficients an embedder could have set (its choice never sees the key)
        n = int(read.sum())
        agree = int(np.sum(np.sign(c[read]) == s[read]))
        p1 = float(binom.sf(agree - 1, n, 0.5)) if n else 1.0
        if best[1] is None or p1 < best[0]:
            best = (p1, (fy, oy, fx, ox), agree, n)
    p1, frame, agree, n = best
    p = min(1.0, len(FRAMES) * p1)  # P(some frame agrees this much by chance)
    z = float(norm.isf(p)) if p < 1 else 0.0
    return {"kind": "image", "method": METHOD, "z": round(z, 4), "p_value": p, "agreement": round(agree / max(n, 1), 4),
            "coefficients": n, "frames_searched": len(FRAMES), "detected": z > Z_THRESHOLD, "threshold": Z_THRESHOLD,
            "frame": {"visible": [frame[0], frame[2]], "offset": [frame[1], frame[3]]}}


def read_image(data: bytes) -> np.ndarray:
    """Image bytes -> uint8 (H, W, C), C 1 (grey) or 3."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
        raise GenloomError(f"not a readable image ({type(e).__name__}: {e})") from None
    if im.mode in ("L", "I;16", "I", "F", "1"):
        return np.asarray(im.convert("L"))[..., None]
    return np.asarray(im.convert("RGB"))
