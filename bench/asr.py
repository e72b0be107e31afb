"""Transcription: genloom's wrapper (genloom.pipelines.asr) against faster-whisper called directly, on the same real
clips with the same model object and the same decoding, plus pocketsphinx beside them.

Clips: the 10 transcribed utterances of Debian's pocketsphinx-testdata (5 LibriVox "Sense and Sensibility" reads,
5 card-game phrases; 16 kHz WAV, 33.9 s in all). Decoding for both Whisper sides: Whisper base int8 on CPU
(CTranslate2), language en, beam size 5, temperature 0 without fallback, no VAD, audio decoded by PyAV inside the
timed call. Speed: interleaved rounds (ours, peer / peer, ours, ...), each transcribing every clip; the rate is
seconds of audio per second of compute (its inverse is the real-time factor); ratio = peer time / our time (1.0:
the wrapper costs nothing). WER: corpus WER over the 10 clips by jiwer after Whisper's English normaliser
(whisper-normalizer), the same for all three recognizers.

    python bench/asr.py                      # -> bench/results/asr.jsonl
    python bench/asr.py --repeat 5 --threads 2
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import interleaved, pair, report
from genloom.metrics import audio as metrics
from genloom.pipelines import asr

DATA = Path("/usr/share/pocketsphinx/test/data")


def clips() -> list[tuple[Path, str]]:
    """(wav, transcript) for every transcribed utterance in pocketsphinx-testdata."""
    out = []
    for folder, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for line in (DATA / folder / listing).read_text().splitlines():
            m = re.match(r"<s>\s*(.*?)\s*</s>\s*\((.+)\)", line.strip())
            if m:
                out.append((DATA / folder / f"{m.group(2)}.wav", m.group(1)))
    if not out:
        sys.exit("no clips: apt-get install pocketsphinx-testdata")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a Whisper folder (default: models/asr-whisper-base)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="CTranslate2 CPU threads")
    ap.add_argument("--beam", type=int, default=asr.BEAM_SIZE)
    args = ap.parse_args()
    data = clips()
    seconds = sum(metrics.load_audio(p)[0].size / 16000 for p, _ in data)
    ours = asr.load_asr(args.model or "whisper-base", threads=args.threads)
    peer = ours.model  # the same faster_whisper.WhisperModel: only the wrapper differs
    texts = {"genloom": [], "peer": []}

    def run_ours(keep=False):
        for path, _ in data:
            r = ours.transcribe(path, language="en", beam_size=args.beam, fallback=False)
            if keep:
                texts["genloom"].append(r.text)

    def run_peer(keep=False):
        for path, _ in data:
            segs, _ = peer.transcribe(str(path), language="en", beam_size=args.beam, temperature=[0.0],
                                      vad_filter=False)
            text = " ".join(s.text.strip() for s in segs).strip()
            if keep:
                texts["peer"].append(text)

    run_ours(keep=True)  # also the warm-up round
    run_peer(keep=True)
    times = interleaved({"genloom": run_ours, "peer": run_peer}, repeat=args.repeat, warmup=0)
    sphinx, t0 = [], time.perf_counter()
    for path, _ in data:
        x, sr = metrics.load_audio(path)
        sphinx.append(metrics.transcribe(x, sr)["text"])
    sphinx_s = time.perf_counter() - t0
    refs = [t for _, t in data]
    wers = {k: metrics.wer(v, refs, "whisper")["wer"] for k, v in {**texts, "pocketsphinx": sphinx}.items()}
    setup = {"clips": len(data), "audio_seconds": round(seconds, 2), "model": str(ours.path), "ct2_threads": args.threads,
             "decoding": ours.protocol(beam_size=args.beam, language="en", fallback=False)}
    speed = pair("transcribe-rtf", "audio s per compute s", seconds, times["genloom"], times["peer"], digits=2,
                 genloom_rtf=round(min(times["genloom"]) / seconds, 3), peer_rtf=round(min(times["peer"]) / seconds, 3),
                 same_text=texts["genloom"] == texts["peer"], **setup)
    quality = {"case": "wer", "unit": "corpus WER (lower is better)", "genloom": round(wers["genloom"], 4),
               "peer": round(wers["peer"], 4), "ratio": None, "pocketsphinx": round(wers["pocketsphinx"], 4),
               "pocketsphinx_rtf": round(sphinx_s / seconds, 3),
               "normalisation": metrics.normalisation_protocol("whisper"),
               "transcripts": [{"reference": r, "genloom": g, "peer": p, "pocketsphinx": s}
                               for r, g, p, s in zip(refs, texts["genloom"], texts["peer"], sphinx)], **setup}
    report("asr", [speed, quality])


if __name__ == "__main__":
    main()
