"""Audio metrics: duration, BS.1770 loudness, pocketsphinx transcripts and word error rate, each with its protocol."""

from __future__ import annotations

import functools
import math
from importlib import metadata
from pathlib import Path

import numpy as np

from genloom.errors import GenloomError

ASR_RATE = 16000  # the bundled en-US acoustic model is trained on 16 kHz speech
FRAME_RATE = 100  # pocketsphinx frames per second (its word segments are in frames)
FILLERS = {"<s>", "</s>", "<sil>"}  # silences in pocketsphinx's segmentation, not words
BLOCK_S = 0.400  # BS.1770 gating block
NORMALISATION = "lowercase, punctuation removed, whitespace collapsed, numbers left as written"
LOUDNESS_PROTOCOL = ("integrated loudness ITU-R BS.1770-4 (pyloudnorm, K-weighting, 400 ms blocks, 75% overlap, "
                     "-70 LUFS absolute and -10 LU relative gates, no LUFS under 400 ms); peak is the sample peak "
                     "(not true peak); RMS in dB relative to a full-scale square wave (a full-scale sine reads -3.01)")


def load_audio(path, *, mono: bool = True) -> tuple[np.ndarray, int]:
    """Read a sound file with soundfile (libsndfile) as float32 in [-1, 1]; channels averaged when mono."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise GenloomError(f"audio file not found: {path}")
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise GenloomError(f"cannot read audio file {path}: {str(e).splitlines()[0]}") from None
    if x.shape[0] == 0:
        raise GenloomError(f"audio file {path} has no samples")
    return (x.mean(axis=1) if mono else x), int(sr)


def duration(samples, sr: int) -> dict:
    """Length in seconds: number of samples over the sample rate."""
    n = int(np.asarray(samples).shape[0])
    return {"seconds": n / sr, "samples": n, "sample_rate": int(sr),
            "protocol": f"samples / sample rate ({sr} Hz)"}


def _dbfs(value: float) -> float:
    return 20 * math.log10(value) if value > 0 else -math.inf


def loudness(samples, sr: int) -> dict:
    """Integrated loudness (ITU-R BS.1770-4 via pyloudnorm), sample peak and RMS, all relative to full scale.

    `samples` is (T,) mono or (T, C) with up to 5 channels summed with BS.1770 weights. A clip shorter
    than one 400 ms gating block has no integrated loudness: `lufs` is None and `note` says why.
    """
    import pyloudnorm

    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2 and x.shape[1] > 5:
        raise GenloomError(f"BS.1770 loudness takes at most 5 channels, got {x.shape[1]}")
    seconds = x.shape[0] / sr
    out = {
        "lufs": None,
        "peak_dbfs": _dbfs(float(np.abs(x).max(initial=0.0))),
        "rms_dbfs": _dbfs(float(np.sqrt(np.mean(x ** 2)))) if x.size else -math.inf,
        "protocol": f"{LOUDNESS_PROTOCOL}; pyloudnorm {metadata.version('pyloudnorm')}, "
                    f"{x.shape[1] if x.ndim == 2 else 1} channel(s) at {sr} Hz",
    }
    if seconds < BLOCK_S:
        out["note"] = f"clip is {seconds * 1000:.0f} ms, shorter than the 400 ms BS.1770 gating block: no LUFS"
        return out
    out["lufs"] = float(pyloudnorm.Meter(sr, block_size=BLOCK_S).integrated_loudness(x))  # -inf when all gated
    return out


@functools.lru_cache(maxsize=1)
def _decoder():
    """pocketsphinx Decoder with its bundled en-US model (acoustic model, 3-gram LM, CMU dictionary), loaded once."""
    try:
        import pocketsphinx
    except ImportError:
        raise GenloomError("speech metrics need pocketsphinx: pip install pocketsphinx") from None
    return pocketsphinx.Decoder()


def asr_protocol() -> str:
    version = metadata.version("pocketsphinx")
    return (f"pocketsphinx {version} en-US default model (en-us acoustic model, en-us.lm.bin 3-gram LM, "
            f"cmudict-en-us), audio mixed to mono and resampled to {ASR_RATE} Hz int16 with scipy resample_poly, "
            f"one utterance per clip; WER via jiwer {metadata.version('jiwer')}, normalisation: {NORMALISATION}")


def to_asr_input(samples, sr: int) -> np.ndarray:
    """Mono float audio -> 16 kHz int16 by polyphase resampling (scipy.signal.resample_poly, Kaiser window)."""
    from scipy.signal import resample_poly

    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sr != ASR_RATE:
        g = math.gcd(ASR_RATE, int(sr))
        x = resample_poly(x, ASR_RATE // g, int(sr) // g)
    return np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)


def transcribe(samples, sr: int) -> dict:
    """Transcribe one clip as a single utterance with pocketsphinx (CMU Sphinx, HMM + n-gram LM decoding)."""
    decoder = _decoder()
    pcm = to_asr_input(samples, sr)
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    words = [{"word": s.word.split("(")[0], "start": s.start_frame / FRAME_RATE, "end": (s.end_frame + 1) / FRAME_RATE}
             for s in decoder.seg() if s.word not in FILLERS and not s.word.startswith("[")]
    return {"text": hyp.hypstr if hyp is not None else "", "seconds": len(pcm) / ASR_RATE, "words": words,
            "protocol": asr_protocol()}


def _normaliser():
    import jiwer

    return jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                          jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])


def _check_pairs(n_hyps: int, n_refs: int, what: str = "hypotheses") -> None:
    if n_hyps != n_refs or n_refs == 0:
        raise GenloomError(f"word error rate needs one reference per item: "
                           f"got {n_hyps} {what} and {n_refs} references")


def wer(hyps, refs) -> dict:
    """Corpus word error rate (S + D + I) / N by Levenshtein alignment (jiwer), after the stated normalisation."""
    import jiwer

    hyps, refs = list(hyps), list(refs)
    _check_pairs(len(hyps), len(refs))
    norm = _normaliser()
    items = []
    for i, (h, r) in enumerate(zip(hyps, refs)):
        if not norm(r)[0]:
            raise GenloomError(f"reference {i + 1} of {len(refs)} has no words after normalisation: {r!r}")
        o = jiwer.process_words(r, h, reference_transform=norm, hypothesis_transform=norm)
        items.append({"wer": o.wer, "substitutions": o.substitutions, "deletions": o.deletions,
                      "insertions": o.insertions, "reference_words": o.substitutions + o.deletions + o.hits})
    counts = {k: sum(it[k] for it in items) for k in ("substitutions", "deletions", "insertions", "reference_words")}
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    return {"wer": errors / counts["reference_words"], **counts, "items": items,
            "protocol": f"corpus WER = (S + D + I) / reference words over {len(refs)} item(s), "
                        f"jiwer {metadata.version('jiwer')}; normalisation: {NORMALISATION}"}


def _as_audio(item, i: int) -> tuple[str, np.ndarray, int]:
    if isinstance(item, (str, Path)):
        x, sr = load_audio(item)
        return str(item), x, sr
    try:
        x, sr = item
    except (TypeError, ValueError):
        raise GenloomError(f"an audio item must be a path or a (samples, sample_rate) pair, "
                           f"got {type(item).__name__}") from None
    return f"<array {i + 1}>", np.asarray(x, dtype=np.float32), int(sr)


def speech_wer(audios, texts) -> dict:
    """Intelligibility as ASR word error rate: transcribe each clip with pocketsphinx, score against its text."""
    audios, texts = list(audios), list(texts)
    _check_pairs(len(audios), len(texts), "audio clips")
    named = [_as_audio(a, i) for i, a in enumerate(audios)]
    hyps = [transcribe(x, sr)["text"] for _, x, sr in named]
    scores = wer(hyps, texts)
    items = [{"audio": name, "reference": ref, "transcript": hyp, **it}
             for (name, _, _), ref, hyp, it in zip(named, texts, hyps, scores.pop("items"))]
    return {**scores, "items": items, "protocol": asr_protocol()}


def audio_report(paths, texts=None) -> dict:
    """Per-file duration, BS.1770 loudness and (with texts) pocketsphinx WER, plus totals, for `genloom eval`."""
    paths = [str(p) for p in paths]
    if texts is not None:
        texts = list(texts)
        _check_pairs(len(paths), len(texts), "audio files")
    if not paths:
        raise GenloomError("audio report needs at least one audio file")
    files, hyps = [], []
    for p in paths:
        x, sr = load_audio(p, mono=False)  # (T, C): loudness sums channels as BS.1770 does
        row = {"path": p, "seconds": duration(x, sr)["seconds"], "sample_rate": sr, "channels": x.shape[1]}
        row.update({k: v for k, v in loudness(x, sr).items() if k != "protocol"})
        if texts is not None:
            hyps.append(transcribe(x, sr)["text"])
        files.append(row)
    total = {"files": len(files), "seconds": sum(f["seconds"] for f in files)}
    protocol = f"duration: samples / sample rate; loudness: {LOUDNESS_PROTOCOL}, channels summed with BS.1770 weights"
    if texts is not None:
        scores = wer(hyps, texts)
        for row, ref, hyp, it in zip(files, texts, hyps, scores.pop("items")):
            row.update({"reference": ref, "transcript": hyp, "wer": it["wer"]})
        total.update({k: v for k, v in scores.items() if k != "protocol"})
        protocol += f"; speech: {asr_protocol()}"
    return {"files": files, "total": total, "protocol": protocol}
