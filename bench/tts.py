"""Speech synthesis speed: genloom's Piper runner against `piper-tts` on the same ONNX voice, and time to first audio
byte when streaming through the HTTP server against synthesizing the same text whole.

Case tts-rtf: the same 20 sentences (SENTENCES below), each voice speaking each one alone, all 20 per round, rounds
interleaved (ours, then piper's, then the other order). Both run the same .onnx on onnxruntime: genloom with its
own session (N intra-op threads, 1 inter-op, no spinning), piper-tts as it loads itself (`PiperVoice.load`:
onnxruntime's defaults, one thread per physical core, spinning). Case tts-rtf-same-session: piper-tts given genloom's
session options, so only the front ends differ: piper-tts phonemizes with espeak-ng linked in as a library (its own
espeak-ng-data), genloom feeds a running Debian espeak-ng program line by line. Real-time factor = seconds of
compute / seconds of audio made (lower is faster); the row's rates are seconds of audio per second of compute, so
ratio = ours / piper's (above 1: genloom faster). The rows also count the sentences whose phoneme ids are identical.

Case tts-first-byte: a 500-character text (6 sentences) through POST /v1/audio/speech (stream_format audio, pcm) on
a real uvicorn server on loopback: seconds to the first audio byte, against `Voice.synthesize` of the same text
whole in the same process; ratio = whole / first byte (how much sooner a listener hears something).

piper-tts (GPL-3.0) is installed for this benchmark only: pip install piper-tts (the bench extra); genloom does not
import it anywhere else.

    python bench/tts.py                 # -> bench/results/tts.jsonl
    python bench/tts.py --repeat 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:  # openai >= 3 ships its HTTP client as httpx2
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx
import uvicorn
from piper import PiperVoice as PeerVoice  # GPL-3.0: the peer only
from piper.config import PiperConfig

from bench.common import report
from genloom.pipelines import speech
from genloom.serve.app import create_app

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "In the beginning God created the heaven and the earth.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "A journey of a thousand miles begins with a single step.",
    "The train leaves at half past seven, so we should hurry.",
    "Would you like a cup of tea, or would you rather have coffee?",
    "Scientists measured the temperature of the lake every morning for a year.",
    "He opened the old wooden box and found a letter from his grandmother.",
    "Music can change the way we feel about almost anything.",
    "The committee will announce its decision on Friday afternoon.",
    "Bright stars were shining over the quiet mountain village.",
    "Every child in the class wrote a short poem about the sea.",
    "Turn left at the second traffic light and keep going straight.",
    "The library is closed on public holidays, but the reading room stays open.",
    "Good ideas often come when you least expect them.",
    "The river flooded the valley after three days of heavy rain.",
    "Our team worked late into the night to finish the project.",
    "Never trust a map that was drawn by someone who has never left home.",
    "Thank you for listening, and have a wonderful day!",
]
LONG = ("The old lighthouse stood at the edge of the cliff, watching over the grey water. Every night its keeper "
        "climbed the narrow stairs and lit the great lamp. Ships far out at sea saw the light and knew where the "
        "rocks were hidden. In the morning he wrote the weather in a thick book and made himself a pot of strong "
        "tea. Nobody remembered a night when the light had failed, and nobody ever thanked him for it. When he grew "
        "too old for the stairs, his daughter kept the great lamp burning through the night.")


def rtf_case(folder: Path, threads: int, repeat: int, same_session: bool) -> dict:
    onnx = next(folder.glob("*.onnx"))
    ours = speech.load_voice(folder, threads=threads)
    if same_session:
        peer = PeerVoice(session=ours.session,
                         config=PiperConfig.from_dict(json.loads(Path(f"{onnx}.json").read_text())))
    else:
        peer = PeerVoice.load(onnx)
    rate = ours.sample_rate

    def run_ours():
        return sum(len(ours.synthesize(s)) for s in SENTENCES)

    def run_peer():
        return sum(len(c.audio_float_array) for s in SENTENCES for c in peer.synthesize(s))

    run_ours(), run_peer()  # warm-up
    compute, audio = {"genloom": [], "piper": []}, {"genloom": [], "piper": []}
    for r in range(repeat):
        for name in (("genloom", "piper") if r % 2 == 0 else ("piper", "genloom")):
            t0 = time.perf_counter()
            samples = run_ours() if name == "genloom" else run_peer()
            compute[name].append(time.perf_counter() - t0)
            audio[name].append(samples / rate)
    rtf = {k: [c / a for c, a in zip(compute[k], audio[k])] for k in compute}
    same = sum(
        [speech.phoneme_ids(p, ours.id_map) for p in ours.sentences(s)]
        == [peer.phonemes_to_ids(p) for p in peer.phonemize(s)] for s in SENTENCES)
    best_ours, best_peer = min(rtf["genloom"]), min(rtf["piper"])
    med_ours, med_peer = statistics.median(rtf["genloom"]), statistics.median(rtf["piper"])
    return {"case": "tts-rtf-same-session" if same_session else "tts-rtf", "unit": "s of audio / s of compute", "genloom": round(1 / best_ours, 2),
            "peer": round(1 / best_peer, 2), "ratio": round(best_peer / best_ours, 3),
            "genloom_median": round(1 / med_ours, 2), "peer_median": round(1 / med_peer, 2),
            "ratio_median": round(med_peer / med_ours, 3), "repeats": repeat,
            "rtf_genloom": round(best_ours, 4), "rtf_piper": round(best_peer, 4),
            "audio_seconds_per_round": round(statistics.median(audio["genloom"]), 1),
            "sentences": len(SENTENCES), "same_phoneme_ids": f"{same}/{len(SENTENCES)}",
            "peer_name": "piper-tts with genloom's onnxruntime session" if same_session
            else "piper-tts as it loads itself (onnxruntime defaults)", "onnx_threads": threads,
            "stat": "best and median of interleaved rounds"}


def first_byte_case(folder: Path, threads: int, repeat: int) -> dict:
    voice = speech.load_voice(folder, threads=threads)
    app = create_app([str(folder)], max_batch=1, max_queue=2, jobs=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    while not server.started or httpx.get(f"{url}/health").status_code != 200:
        time.sleep(0.05)
    body = {"model": folder.name, "voice": voice.voices[0], "input": LONG, "response_format": "pcm"}
    first, full, whole = [], [], []
    with httpx.Client(base_url=url, timeout=120) as c:
        for r in range(repeat + 1):  # the first round warms up
            t0 = time.perf_counter()
            with c.stream("POST", "/v1/audio/speech", json=body) as resp:
                it = resp.iter_raw()
                next(it)
                t1 = time.perf_counter()
                for _ in it:
                    pass
            t2 = time.perf_counter()
            voice.synthesize(LONG)
            t3 = time.perf_counter()
            if r:
                first.append(t1 - t0), full.append(t2 - t0), whole.append(t3 - t2)
    server.should_exit = True
    th.join(30)
    return {"case": "tts-first-byte", "unit": "s", "genloom": round(min(first), 3), "peer": round(min(whole), 3),
            "ratio": round(min(whole) / min(first), 2), "genloom_median": round(statistics.median(first), 3),
            "peer_median": round(statistics.median(whole), 3),
            "ratio_median": round(statistics.median(whole) / statistics.median(first), 2),
            "http_full_response_s": round(min(full), 3), "characters": len(LONG),
            "sentences": len(voice.sentences(LONG)), "repeats": repeat, "onnx_threads": threads,
            "peer_name": "Voice.synthesize of the whole text (no HTTP)",
            "stat": "best and median; genloom = first byte over HTTP, peer = whole synthesis"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "voice-joe"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    folder = Path(args.model)
    report("tts", [rtf_case(folder, args.threads, args.repeat, False), rtf_case(folder, args.threads, args.repeat, True),
                   first_byte_case(folder, args.threads, args.repeat)])


if __name__ == "__main__":
    main()
