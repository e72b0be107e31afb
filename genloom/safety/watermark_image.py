"""Image watermark for small images: keyed signs on low/mid-frequency DCT coefficients of the luminance.

Why our own: genloom's images are 28x28 to 64x64; `invisible-watermark`'s dwtDct/dwtDctSvd embed bits in
4x4 blocks of a DWT sub-band and RivaGAN works on 256x256 crops; on our sizes their bits do not survive a
resize by 0.5 (bench/watermark.py measures them). This mark is zero-bit (is it marked with this key?) and
scale-free: the 2-D DCT coefficient (u, v) of a window means the same spatial frequency at any size, so a
resized copy is read at its own size. It sits in the central INNER share of each side (even size, even
offset), which a crop keeping 90% of each side holds whole wherever it cuts. The key draws a sign for every
(u, v) with 2 <= u + v <= 14 (u, v <= 12 and below the window's half-size Nyquist). Embedding moves each
coefficient the picture leaves small (|c| <= CAP pixel levels) the least that gives it the key's sign with
MARGIN (informed embedding, a few passes against clipping); larger ones are left alone. The detector reads,
in every window a crop of 0-10% could have left (sizes and offsets, 1-pixel steps), the coefficients with
|c| <= CAP: their sign agreements are Binomial(n, 1/2) for an unmarked picture or another key (which ones
are read never depends on the key), so the best window's p-value, Bonferroni-corrected for the windows
searched, is exact, and its one-sided z is reported.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import math
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from scipy.fft import dctn, idctn
from scipy.stats import binom, norm

from genloom.errors import GenloomError

METHOD = "genloom-dct-sign-v1"
MAX_UV, MIN_SUM, MAX_SUM = 12, 2, 14
MARGIN = 1.5  # pixel levels: each coefficient's sign held with this amplitude
CAP = 4.0  # pixel levels: a coefficient larger than this in the picture is left alone (and not read)
PASSES = 3
Z_THRESHOLD = 4.0
MIN_SIDE = 8
MAX_READ = 128  # a larger image is read from a copy of this size
INNER = 0.75  # the marked window's share of each side
MIN_KEPT = 0.9  # the smallest share of each side a crop may have kept (searched)
HALF = 0.5  # highest index embedded per side length (Nyquist)
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


def window(h: int, w: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the marked window: the central INNER share of each side, even-sized at even
    offsets (a copy resized by 0.5 keeps it on whole pixels), which a crop keeping 90% of each side holds whole."""
    wh, ww = 2 * round(INNER * h / 2), 2 * round(INNER * w / 2)
    return 2 * round((h - wh) / 4), 2 * round((w - ww) / 4), wh, ww


def embed(img: np.ndarray, secret: bytes) -> np.ndarray:
    """uint8 (H, W, C) with C 1 or 3 -> the same, marked in the luminance of its central window (the change added to
    every channel)."""
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise GenloomError(f"image watermark: images need at least {MIN_SIDE}x{MIN_SIDE} pixels (got {w}x{h})")
    top, left, wh, ww = window(h, w)
    U, V = band(min(MAX_UV, int(HALF * min(wh, ww))))  # what a copy resized by 0.5 still holds clearly
    s = signs(secret)[U, V]
    scale = math.sqrt(wh * ww) / 2  # an orthonormal DCT coefficient per pixel level of its cosine
    base = img.astype(np.float64)
    c0 = dctn(_luma(img)[top : top + wh, left : left + ww], norm="ortho")[U, V]
    hopeful = np.abs(c0) <= CAP * scale  # a coefficient of the picture's own larger than CAP is left alone
    delta, moved = np.zeros((h, w)), np.zeros(len(U))
    for _ in range(PASSES):  # clipping at 0 and 255 eats some of the change: measure again and top it up
        y = _luma(np.clip(np.round(base + delta[..., None]), 0, 255))[top : top + wh, left : left + ww]
        c = dctn(y, norm="ortho")[U, V]
        need = np.where(hopeful, np.clip(MARGIN * scale - s * c, 0, (MARGIN + CAP) * scale - moved), 0)
        if not need.any():
            break
        moved += need
        d = np.zeros((wh, ww))
        d[U, V] = s * need
        delta[top : top + wh, left : left + ww] += idctn(d, norm="ortho")
    return np.clip(np.round(base + delta[..., None]), 0, 255).astype(np.uint8)


def _sizes(h: int, w: int):
    """Where the marked window may sit in an image of h x w: every height from INNER of the image's to INNER / 0.9
    of it (a crop kept 90% to 100% of each side) and one pixel either side (the embedder rounds to even sizes),
    the width in proportion (and one pixel either side when the image is not square), at the offsets such a crop
    leaves it (the original's centred window, less what the crop took from the top or left; 1-pixel steps)."""
    for wh in range(max(1, math.floor(INNER * h) - 1), min(h, math.ceil(INNER * h / MIN_KEPT) + 1) + 1):
        f = min(1.0, INNER * h / wh)  # the share of the original's side this size implies
        base = round(wh * w / h)
        for ww in sorted({base} if h == w else {base - 1, base, base + 1}):
            if 1 <= ww <= w:
                yield wh, ww, _offsets(h, wh, f), _offsets(w, ww, f)


def _basis(n: int, k: int) -> np.ndarray:
    """The first k functions of the orthonormal DCT-II of length n: (k, n), as scipy's dct(norm="ortho")."""
    b = np.sqrt(2 / n) * np.cos(np.pi * np.outer(np.arange(k), np.arange(n) + 0.5) / n)
    b[0] /= np.sqrt(2)
    return b


def _coefficients(y: np.ndarray, wh: int, ww: int, tops: range, lefts: range, limit: int) -> np.ndarray:
    """DCT coefficients (u, v <= limit) of every wh x ww window at these offsets: (tops, lefts, u, v), separably."""
    by, bx = _basis(wh, limit + 1), _basis(ww, limit + 1)
    rows = sliding_window_view(y, wh, axis=0)[tops.start : tops.stop]  # (T, w, wh)
    a = rows @ by.T  # (T, w, u)
    cols = sliding_window_view(a, ww, axis=1)[:, lefts.start : lefts.stop]  # (T, L, u, ww)
    return cols @ bx.T  # (T, L, u, v)


def _offsets(n: int, size: int, f: float) -> range:
    full = n / f  # the original's side
    centred = full * (1 - INNER) / 2
    return range(max(0, math.floor(centred - full * (1 - f)) - 1), min(n - size, math.ceil(centred) + 1) + 1)


def detect(img: np.ndarray, secret: bytes) -> dict:
    """The mark's report for uint8 (H, W, C): agreements in the best window, the Bonferroni-corrected p and z."""
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise GenloomError(f"image watermark: an image of {w}x{h} is too small to read (at least {MIN_SIDE}x{MIN_SIDE})")
    if max(h, w) > MAX_READ:  # the mark is read at any size: a large copy is read at MAX_READ (bounded work)
        k = MAX_READ / max(h, w)
        size = (max(MIN_SIDE, round(w * k)), max(MIN_SIDE, round(h * k)))
        img = np.asarray(Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).resize(size, Image.BICUBIC))
        img = img.reshape(size[1], size[0], -1)
    y = _luma(img)
    h, w = y.shape
    sg, best, tried = signs(secret), (2.0, None, 0, 0), 0
    for wh, ww, tops, lefts in _sizes(h, w):
        limit = min(MAX_UV, min(wh, ww) - 1)  # every index this size holds
        U, V = band(limit)
        c = _coefficients(y, wh, ww, tops, lefts, limit)[..., U, V] / (math.sqrt(wh * ww) / 2)  # pixel levels
        read = np.abs(c) <= CAP  # the coefficients an embedder could have set (its choice never sees the key)
        n = read.sum(-1)
        agree = (read & (np.sign(c) == sg[U, V])).sum(-1)
        p1 = binom.sf(agree - 1, n, 0.5)  # (T, L); 1 where nothing is read
        tried += p1.size
        i, j = np.unravel_index(int(np.argmin(p1)), p1.shape)
        if p1[i, j] < best[0]:
            best = (float(p1[i, j]), (int(tops.start + i), int(lefts.start + j), wh, ww), int(agree[i, j]), int(n[i, j]))
    p1, where, agree, n = best
    p = min(1.0, tried * p1)  # P(some window agrees this much by chance)
    z = float(norm.isf(p)) if p < 1 else 0.0
    return {"kind": "image", "method": METHOD, "z": round(z, 4), "p_value": p, "agreement": round(agree / max(n, 1), 4),
            "coefficients": n, "windows_searched": tried, "detected": z > Z_THRESHOLD, "threshold": Z_THRESHOLD,
            "window": {"top": where[0], "left": where[1], "height": where[2], "width": where[3]}}


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
