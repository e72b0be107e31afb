"""A speech corpus distilled from an imported voice: it reads held-apart text into an LJSpeech-layout folder.

No speech corpus installs offline, so genloom's starter voice learns from a teacher: the Piper VITS voice
(ONNX) reads KJV verses and English fortunes. A copy of its graph also returns the tensor its length
regulator uses (`w_ceil`, the ceiling of the predicted per-phoneme durations, node `/Ceil`), so every
utterance comes with exact durations in frames of the teacher's hop (256 samples): the student needs no
aligner. The folder: `metadata.csv` (id|text|normalized text), `wavs/ID.wav` (16-bit, 22.05 kHz),
`phonemes.csv` (id|phoneme ids|durations), `phonemes.json` (the id map, rate, hop, teacher), `heldout.txt`
(sentences kept apart: never read for training; the test set of the voice's word error rate) and
`plan.json`. Each WAV is written atomically before its rows; an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tqdm import tqdm

from genloom.data import bible
from genloom.data import speech as features
from genloom.data.text import fortunes
from genloom.errors import GenloomError, choices
from genloom.files import atomic_write_bytes, atomic_write_text
from genloom.pipelines import speech

TEXT_SOURCES = ("kjv", "fortunes")
DURATIONS_NODE = "/Ceil_output_0"  # Piper VITS: w_ceil = ceil(exp(logw) * x_mask * length_scale)
MIN_CHARS, MAX_CHARS = 24, 140
_CLEAN = re.compile(r"^[A-Z][A-Za-z ,;:'-]*[a-z][.!?]$")  # one sentence: no stop before the end


def sentences(sources: tuple[str, ...] = TEXT_SOURCES, seed: int = 0) -> list[str]:
    """Candidate sentences (24-140 characters, letters and plain punctuation, ending a sentence), deduplicated
    and shuffled by seed: KJV verses (Debian bible-kjv) and one-line English fortunes (Debian fortunes)."""
    pool: list[str] = []
    for src in sources:
        if src not in TEXT_SOURCES:
            raise GenloomError(f"unknown text source '{src}'; choose from {choices(TEXT_SOURCES)}")
        texts = bible.kjv_verses().values() if src == "kjv" else (f for f in fortunes() if "\n" not in f.strip())
        pool += [t.strip() for t in texts]
    seen, out = set(), []
    for t in pool:
        key = re.sub(r"\W+", " ", t.lower()).strip()
        if MIN_CHARS <= len(t) <= MAX_CHARS and _CLEAN.match(t) and key not in seen:
            seen.add(key)
            out.append(t)
    order = np.random.default_rng(seed).permutation(len(out))
    return [out[i] for i in order]


class Teacher:
    """A Piper voice (genloom.pipelines.speech) whose graph copy also outputs its per-phoneme durations."""

    hop = 256

    def __init__(self, folder, threads: int = 1):
        self.voice = speech.load_voice(folder, threads=threads)
        if not isinstance(self.voice, speech.PiperVoice):
            raise GenloomError(f"{folder} is not a Piper voice: only a Piper VITS graph gives its durations")
        self.model_path = sorted(p for p in Path(folder).glob("*.onnx") if Path(f"{p}.json").exists())[0]
        graph = onnx.load(str(self.model_path))
        if not any(DURATIONS_NODE in n.output for n in graph.graph.node):
            raise GenloomError(f"{self.model_path} has no '{DURATIONS_NODE}' tensor: not a Piper VITS graph, so its "
                               f"durations cannot be read")
        graph.graph.output.append(onnx.helper.make_tensor_value_info(DURATIONS_NODE, onnx.TensorProto.FLOAT, None))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def ids(self, text: str) -> list[int]:
        """The ids of a one-sentence text, by the voice's own front end."""
        v = self.voice
        return [i for sentence in v.sentences(text) for i in speech.phoneme_ids(sentence, v.id_map, v.clusters)]

    def read(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(audio float32, durations int) for one id sequence; len(audio) == durations.sum() * hop. The audio is
        peak-normalised as the voice's own output is."""
        v = self.voice
        audio, dur = self.session.run(None, {"input": np.asarray([ids], np.int64),
                                             "input_lengths": np.asarray([len(ids)], np.int64),
                                             "scales": np.asarray([v.noise_scale, v.length_scale, v.noise_w],
                                                                  np.float32)})
        audio = audio.reshape(-1).astype(np.float32)
        return audio / max(float(np.abs(audio).max()), 1e-8), dur.reshape(-1).astype(np.int64)


def _done(out: Path) -> dict[str, tuple[str, str]]:
    """Utterances already written whole: a WAV, a metadata row and a phonemes row (a cut-off line is dropped)."""
    meta, phon = {}, {}
    for name, rows, width in (("metadata.csv", meta, 3), ("phonemes.csv", phon, 3)):
        path = out / name
        if path.exists():
            for line in path.read_text(encoding="utf-8").split("\n"):
                parts = line.split("|")
                if len(parts) == width and all(parts):
                    rows[parts[0]] = line
    return {k: (meta[k], phon[k]) for k in meta if k in phon and (out / "wavs" / f"{k}.wav").is_file()}


def distill(teacher_folder, out_dir, *, n: int = 1000, heldout: int = 120,
            sources: tuple[str, ...] = TEXT_SOURCES, seed: int = 0, prefix: str = "utt",
            progress: bool = True) -> dict:
    """Have the teacher read n sentences into out_dir (LJSpeech layout + durations), keeping `heldout` others apart."""
    if n < 1 or heldout < 0:
        raise GenloomError(f"need n >= 1 and heldout >= 0, got n={n}, heldout={heldout}")
    out = Path(out_dir)
    plan = {"teacher": str(teacher_folder), "n": n, "heldout": heldout, "sources": list(sources), "seed": seed,
            "prefix": prefix}
    if (out / "plan.json").exists():
        old = json.loads((out / "plan.json").read_text())
        diff = sorted(k for k in plan if old.get(k) != plan[k] and k != "n")  # n may change: same sentence order
        if diff:
            raise GenloomError(f"{out} holds a distillation with other settings ({', '.join(diff)}); resume it with the "
                               f"same ones or choose another --out")
    pool = sentences(tuple(sources), seed)
    if len(pool) < n + heldout:
        raise GenloomError(f"only {len(pool)} sentences in {', '.join(sources)}; ask for fewer than n + heldout")
    teacher = Teacher(teacher_folder)
    held, texts = pool[:heldout], pool[heldout: heldout + n]
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "plan.json", json.dumps(plan, indent=1))
    atomic_write_text(out / "heldout.txt", "".join(t + "\n" for t in held))
    atomic_write_text(out / "phonemes.json", json.dumps(
        {"phoneme_id_map": teacher.voice.id_map, "sample_rate": teacher.voice.sample_rate, "hop": teacher.hop,
         "espeak_voice": teacher.voice.espeak_voice,
         "teacher": f"{teacher.model_path.name} (Piper VITS, onnxruntime)"},
        ensure_ascii=False, indent=1))
    keep = {f"{prefix}-{k:05d}" for k in range(n)}
    done = {k: v for k, v in _done(out).items() if k in keep}  # rewrite both lists with whole rows only, then append
    atomic_write_text(out / "metadata.csv", "".join(m + "\n" for m, _ in done.values()))
    atomic_write_text(out / "phonemes.csv", "".join(p + "\n" for _, p in done.values()))
    seconds = 0.0
    with open(out / "metadata.csv", "a", encoding="utf-8") as meta, open(out / "phonemes.csv", "a") as phon:
        for k, text in enumerate(tqdm(texts, desc="distilling", unit="utt", disable=not progress)):
            uid = f"{prefix}-{k:05d}"
            if uid in done:
                continue
            ids = teacher.ids(text)
            audio, dur = teacher.read(ids)
            seconds += len(audio) / teacher.voice.sample_rate
            atomic_write_bytes(out / "wavs" / f"{uid}.wav", features.wav_bytes(audio, teacher.voice.sample_rate))
            meta.write(f"{uid}|{text}|{text}\n")
            phon.write(f"{uid}|{' '.join(map(str, ids))}|{' '.join(map(str, dur.tolist()))}\n")
            meta.flush()
            phon.flush()
    return {"out": str(out), "utterances": n, "resumed": len(done), "heldout": len(held),
            "new_seconds": round(seconds, 1)}
