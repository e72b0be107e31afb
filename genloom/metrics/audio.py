"""Audio metrics: duration, BS.1770 loudness, pocketsphinx transcripts, word error rate (with the basic or Whisper's
English normalisation), mel-cepstral distortion after DTW alignment and real-time factor, each with its protocol."""

from __future__ import annotations

import functools
import math
import time
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


WHISPER_NORMALISATION = ("Whisper's EnglishTextNormalizer (the rules of openai/whisper's normalizers/english.py as "
                         "packaged by whisper-normalizer {version}: lowercase; bracketed and parenthesised spans and "
                         "fillers (hmm, uh, um) removed; contractions and titles expanded (won't -> will not, mr -> "
                         "mister); spelled-out numbers to digits, currencies and percentages spelled out; British "
                         "spellings to American; punctuation and diacritics removed; whitespace collapsed)")
NORMALISERS = ("basic", "whisper")


def _normaliser(kind: str = "basic"):
    import jiwer

    if kind == "whisper":
        try:
            from whisper_normalizer.english import EnglishTextNormalizer
        except ImportError:
            raise GenloomError("Whisper's text normalisation needs whisper-normalizer: pip install whisper-normalizer") from None
        english = EnglishTextNormalizer()
        return jiwer.Compose([lambda s: english(s) if isinstance(s, str) else [english(t) for t in s],
                              jiwer.RemoveMultipleSpaces(), jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    if kind != "basic":
        raise GenloomError(f"unknown text normalisation '{kind}'; choose one of {', '.join(NORMALISERS)}")
    return jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                          jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])


def normalisation_protocol(kind: str = "basic") -> str:
    return WHISPER_NORMALISATION.format(version=metadata.version("whisper-normalizer")) if kind == "whisper" \
        else NORMALISATION


def _check_pairs(n_hyps: int, n_refs: int, what: str = "hypotheses") -> None:
    if n_hyps != n_refs or n_refs == 0:
        raise GenloomError(f"word error rate needs one reference per item: "
                           f"got {n_hyps} {what} and {n_refs} references")


def wer(hyps, refs, normalisation: str = "basic") -> dict:
    """Corpus word error rate (S + D + I) / N by Levenshtein alignment (jiwer), after the stated normalisation
    ("basic": lowercase, no punctuation; "whisper": Whisper's English normaliser, numbers as digits)."""
    import jiwer

    hyps, refs = list(hyps), list(refs)
    _check_pairs(len(hyps), len(refs))
    norm = _normaliser(normalisation)
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
                        f"jiwer {metadata.version('jiwer')}; normalisation: {normalisation_protocol(normalisation)}"}


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


def audio_report(paths, texts=None, *, transcriber=None, asr_protocol_text: str | None = None,
                 normalisation: str = "basic", references=None) -> dict:
    """Per-file duration, BS.1770 loudness, (with texts) ASR transcripts and WER, (with reference recordings)
    mel-cepstral distortion, plus totals, for `genloom eval`.

    `transcriber(samples, sr) -> (text, compute seconds)` defaults to pocketsphinx; the transcription real-time
    factor (compute / audio seconds) comes with it. `references`: one reference recording per file (MCD)."""
    paths = [str(p) for p in paths]
    if texts is not None:
        texts = list(texts)
        _check_pairs(len(paths), len(texts), "audio files")
    if references is not None:
        references = [str(r) for r in references]
        _check_pairs(len(paths), len(references), "audio files")
    if not paths:
        raise GenloomError("audio report needs at least one audio file")
    transcriber = transcriber or _pocketsphinx_timed
    files, hyps, compute = [], [], 0.0
    for i, p in enumerate(paths):
        x, sr = load_audio(p, mono=False)  # (T, C): loudness sums channels as BS.1770 does
        row = {"path": p, "seconds": duration(x, sr)["seconds"], "sample_rate": sr, "channels": x.shape[1]}
        row.update({k: v for k, v in loudness(x, sr).items() if k != "protocol"})
        if texts is not None:
            text, spent = transcriber(x.mean(axis=1), sr)
            hyps.append(text)
            compute += spent
            row["asr_rtf"] = real_time_factor(spent, row["seconds"])["rtf"]
        if references is not None:
            ref, ref_sr = load_audio(references[i])
            row["reference_audio"] = references[i]
            row["mcd_db"] = mcd(ref, ref_sr, x.mean(axis=1), sr)["mcd_db"]
        files.append(row)
    total = {"files": len(files), "seconds": sum(f["seconds"] for f in files)}
    protocol = f"duration: samples / sample rate; loudness: {LOUDNESS_PROTOCOL}, channels summed with BS.1770 weights"
    if texts is not None:
        scores = wer(hyps, texts, normalisation)
        for row, ref, hyp, it in zip(files, texts, hyps, scores.pop("items")):
            row.update({"reference": ref, "transcript": hyp, "wer": it["wer"]})
        total.update({k: v for k, v in scores.items() if k != "protocol"})
        total["asr_rtf"] = real_time_factor(compute, total["seconds"])["rtf"]
        protocol += (f"; speech: {asr_protocol_text or asr_protocol().split('; WER')[0]}; WER via jiwer "
                     f"{metadata.version('jiwer')}, normalisation: {normalisation_protocol(normalisation)}; "
                     f"asr_rtf: {RTF_PROTOCOL}, of the transcription")
    if references is not None:
        total["mcd_db"] = float(np.mean([f["mcd_db"] for f in files]))
        protocol += f"; MCD: {MCD_PROTOCOL}, the mean over files"
    return {"files": files, "total": total, "protocol": protocol}


def _pocketsphinx_timed(samples, sr) -> tuple[str, float]:
    t0 = time.perf_counter()
    text = transcribe(samples, sr)["text"]
    return text, time.perf_counter() - t0


# ---- real-time factor ----
RTF_PROTOCOL = "real-time factor = wall-clock compute seconds / seconds of audio (below 1: faster than real time)"


def real_time_factor(compute_seconds: float, audio_seconds: float) -> dict:
    """Seconds of compute per second of audio."""
    if audio_seconds <= 0:
        raise GenloomError(f"real-time factor needs audio longer than 0 s, got {audio_seconds}")
    return {"rtf": compute_seconds / audio_seconds, "compute_seconds": compute_seconds,
            "audio_seconds": audio_seconds, "protocol": RTF_PROTOCOL}


# ---- mel-cepstral distortion ----
MCD_RATE = 16000
MCD_WINDOW, MCD_HOP, MCD_FFT, MCD_MELS, MCD_ORDER = 400, 80, 512, 40, 24  # 25 ms Hann, 5 ms hop, at 16 kHz
MCD_PROTOCOL = (f"mel-cepstral distortion MCD = 10/ln10 * sqrt(2 * sum_d=1..{MCD_ORDER} (c_d - c'_d)^2) dB, the mean "
                f"over the frame pairs of a DTW alignment (steps (1,0), (0,1), (1,1), Euclidean cost on c_1..c_"
                f"{MCD_ORDER}); analysis: both signals mono, resampled to {MCD_RATE} Hz (scipy resample_poly), "
                f"{MCD_WINDOW * 1000 // MCD_RATE} ms Hann frames every {MCD_HOP * 1000 // MCD_RATE} ms, "
                f"{MCD_FFT}-point power spectrum, {MCD_MELS} triangular HTK-mel bands 0-{MCD_RATE // 2} Hz, "
                f"c_m = 1/N sum_n ln A_n cos(pi m (n + 1/2) / N), the cepstrum of the natural-log mel amplitude "
                f"(A_n^2 the band power, floored at 1e-10), so that with c_0 (energy) left out MCD is the RMS "
                f"log-spectral distance in dB over the mel axis; all frames kept (no silence trimming)")


def resample(x, sr: int, to: int) -> np.ndarray:
    """Mono float64 at `to` Hz by polyphase resampling (scipy.signal.resample_poly); channels averaged."""
    from scipy.signal import resample_poly

    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sr == to:
        return x
    g = math.gcd(to, int(sr))
    return resample_poly(x, to // g, int(sr) // g)


def mel_filterbank(n_mels: int = MCD_MELS, n_fft: int = MCD_FFT, sr: int = MCD_RATE) -> np.ndarray:
    """Triangular filters equally spaced on the HTK mel scale (2595 log10(1 + f/700)), (n_mels, n_fft // 2 + 1)."""
    top = 2595.0 * np.log10(1.0 + (sr / 2) / 700.0)  # the Nyquist frequency in mel
    edges = 700.0 * (10 ** (np.linspace(0.0, top, n_mels + 2) / 2595.0) - 1.0)
    freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))


def mel_power(samples, sr: int, *, hop: int = MCD_HOP, n_mels: int = MCD_MELS) -> np.ndarray:
    """(T, n_mels) mel-band power of 25 ms Hann frames every `hop` samples at 16 kHz (n_fft 512, the HTK mel bank):
    what the MCD analysis and the report's spectrograms read."""
    x = resample(samples, sr, MCD_RATE)
    x = np.pad(x, (0, max(0, MCD_WINDOW - x.size)))
    frames = np.lib.stride_tricks.sliding_window_view(x, MCD_WINDOW)[::hop] * np.hanning(MCD_WINDOW)
    return (np.abs(np.fft.rfft(frames, MCD_FFT)) ** 2) @ mel_filterbank(n_mels).T


def mel_cepstrum(samples, sr: int) -> np.ndarray:
    """Mel-cepstral coefficients c_0..c_24 per frame, (T, 25), by the analysis MCD_PROTOCOL states."""
    from scipy.fft import dct

    log_amp = 0.5 * np.log(np.maximum(mel_power(samples, sr), 1e-10))  # (T, mels)
    return dct(log_amp, type=2, axis=1)[:, : MCD_ORDER + 1] / (2 * MCD_MELS)  # c_m = 1/N sum ln A_n cos(pi m (n+.5)/N)


def dtw(cost: np.ndarray) -> list[tuple[int, int]]:
    """The minimum-cost monotonic alignment of a (N, M) cost matrix, steps (1,0), (0,1), (1,1); anti-diagonals
    are filled one vector at a time. Returns the path's (i, j) pairs from (0, 0) to (N-1, M-1)."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for k in range(2, n + m + 1):  # cells with i + j == k (1-based)
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        acc[i, j] = cost[i - 1, j - 1] + np.minimum(np.minimum(acc[i - 1, j], acc[i, j - 1]), acc[i - 1, j - 1])
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        step = np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return path[::-1]


def mcd_from_cepstra(ref: np.ndarray, syn: np.ndarray) -> dict:
    """MCD in dB between two (T, 1 + order) cepstrum sequences: DTW on c_1.., then the mean frame distortion."""
    from scipy.spatial.distance import cdist

    a, b = np.asarray(ref, dtype=np.float64)[:, 1:], np.asarray(syn, dtype=np.float64)[:, 1:]
    path = dtw(cdist(a, b))
    i, j = np.array(path).T
    per_frame = 10.0 / np.log(10.0) * np.sqrt(2.0 * np.sum((a[i] - b[j]) ** 2, axis=1))
    return {"mcd_db": float(per_frame.mean()), "frames_ref": len(a), "frames_syn": len(b), "path": len(path),
            "protocol": MCD_PROTOCOL}


def mcd(ref_samples, ref_sr: int, syn_samples, syn_sr: int) -> dict:
    """Mel-cepstral distortion (dB) of a recording against a reference recording of the same words."""
    return mcd_from_cepstra(mel_cepstrum(ref_samples, ref_sr), mel_cepstrum(syn_samples, syn_sr))
