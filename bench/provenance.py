"""What labelling costs an output: the time of `labels.label_bytes` (visible mark, GB 45438 label, C2PA signature)
next to the time of encoding the output in the first place (the peer, same run), and the bytes it adds.

    python3 bench/provenance.py            # prints one JSON line per case, saves bench/results/provenance.jsonl
"""

from __future__ import annotations

import io
import sys
import wave
from pathlib import Path

import lameenc
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import interleaved, report
from genloom.safety import keys, labels


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def wav(x: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def mp3(x: np.ndarray, rate: int) -> bytes:
    enc = lameenc.Encoder()
    enc.set_bit_rate(128), enc.set_in_sample_rate(rate), enc.set_channels(1)
    return bytes(enc.encode((x * 32767).astype("<i2").tobytes()) + enc.flush())


def main() -> None:
    rng = np.random.default_rng(0)
    signer = labels.Labeler(labels.LabelPolicy(), keys.make_chain())
    meta = labels.OutputMeta("gl-bench", model="bench", parameters={"seed": 0})
    rate = 22050
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(10 * rate) / rate)).astype(np.float32)
    cases = {
        "png 64x64": ("png", lambda: png(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))),
        "png 512x512": ("png", lambda: png(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8))),
        "wav 10 s 22.05 kHz": ("wav", lambda: wav(tone, rate)),
        "mp3 10 s 128 kbit/s": ("mp3", lambda: mp3(tone, rate)),
    }
    rows = []
    for case, (fmt, encode) in cases.items():
        data = encode()
        out = labels.label_bytes(data, fmt, meta, signer)
        times = interleaved({"encode": encode, "label": lambda d=data, f=fmt: labels.label_bytes(d, f, meta, signer)},
                            repeat=5)
        rows.append({"case": case, "unit": "ms", "genloom": round(1000 * min(times["label"]), 2),
                     "peer": round(1000 * min(times["encode"]), 2),
                     "ratio": round(min(times["label"]) / min(times["encode"]), 3),
                     "bytes_plain": len(data), "bytes_labelled": len(out), "bytes_added": len(out) - len(data),
                     "what": "label_bytes (mark + AIGC label + C2PA ES256 signature) vs encoding the output; "
                             "best of 5 interleaved"})
    report("provenance", rows)


if __name__ == "__main__":
    main()
