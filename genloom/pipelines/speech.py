"""Text-to-speech: text -> espeak-ng phonemes -> a voice model -> float32 mono audio, sentence by sentence.

The front end is Piper's (rhasspy/piper `phonemize_espeak.py`, `phoneme_ids.py`) without the GPL `piper-tts`
package: espeak-ng runs as a separate program (`espeak-ng -q --ipa`), the text is split into clauses at
punctuation, each clause phonemized, and the punctuation put back as phonemes (`,` `:` `;` followed by a space;
`.` `!` `?` end a sentence), the result decomposed into code points (NFD) and mapped to ids in Piper's layout:
BOS `^`, a pad `_` after every phoneme, EOS `$`, unknown phonemes skipped. A Piper voice is a VITS network
(Kim et al. 2021, "Conditional Variational Autoencoder with Adversarial Learning for End-to-End Text-to-Speech")
exported to ONNX; it runs on onnxruntime with `scales = [noise_scale, length_scale, noise_w]` from its .onnx.json.

`load_voice(folder)` asks LOADERS, a registry of (file pattern -> loader), which kind of voice the folder holds,
so a voice trained by genloom registers its own loader beside the Piper one.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from genloom.errors import GenloomError, choices

try:
    import onnxruntime as ort
except ImportError:  # optional: named in the error when a voice is loaded
    ort = None

ESPEAK = "espeak-ng"
MAX_INPUT = 4096  # characters: OpenAI's limit for /v1/audio/speech, also the CLI's
SPEED_RANGE = (0.25, 4.0)
DEFAULT_THREADS = 2
# onnxruntime's worker threads spin while waiting for work by default: on a machine shared with other jobs that
# burns the cores the next operator needs (bench/tts.py: real-time factor 0.16 without spinning, 0.26 with, at
# load 9 on 2 cores), so genloom's sessions do not spin.
SPIN = False
BOS, EOS, PAD = "^", "$", "_"
_CLAUSE_END = re.compile(r"([.!?;:,]+|\s[\u2013\u2014]|\s--)(?=\s|$)")  # punctuation then a space or the end
_LANG_SWITCH = re.compile(r"\([^)]+\)")  # espeak's (en) ... (cmn) markers around foreign words
_SENTENCE_MARKS = ".!?"


def _terminator(marks: str) -> str:
    """The one mark a run of punctuation stands for, as espeak's clause types do: a spaced dash pauses like ';',
    an ellipsis goes on without a mark, otherwise a question or exclamation wins, then the last mark ('a.m.,')."""
    marks = marks.strip()
    if marks in ("\u2013", "\u2014", "--"):
        return ";"
    if marks.startswith(".."):
        return " "
    return "?" if "?" in marks else "!" if "!" in marks else marks[-1]


def clauses(text: str) -> list[tuple[str, str]]:
    """Text -> (clause text, terminator) pairs; clauses without a letter or digit are dropped."""
    text = " ".join(text.split())
    parts = _CLAUSE_END.split(text)  # [text, marks, text, marks, ..., text]
    pairs = [(parts[i].strip(), _terminator(parts[i + 1]) if i + 1 < len(parts) else "")
             for i in range(0, len(parts), 2)]
    return [(c, t) for c, t in pairs if any(ch.isalnum() for ch in c)]


class _Espeak:
    """One espeak-ng program kept running per voice, fed a line at a time (its line mode flushes after each line).

    After each clause a sentinel line is written; everything espeak prints before the sentinel's phonemes belongs
    to that clause, however many lines espeak breaks it into. Starting the program costs more than phonemizing a
    sentence, so it is started once (per process: a forked child starts its own). A lock keeps threads in turn.
    """

    SENTINEL = "zugzwang quixotry"  # a clause no text is split into (clauses holding it go through run_once)
    MAX_LINE = 900  # bytes; espeak reads lines of at most 1000

    def __init__(self, exe: str, voice: str):
        self.voice, self.lock, self.pid = voice, threading.Lock(), os.getpid()
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the program; a file, not a pipe: warnings can never fill it and stall espeak
        self.proc = subprocess.Popen([exe, "-q", "--ipa", "-b", "1", "-v", voice], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errors)
        self.buffer = b""
        self.proc.stdin.write(f"{self.SENTINEL}\n".encode())
        self.proc.stdin.flush()
        self.end = self._readline()  # the sentinel's own phonemes (and: did the voice load?)

    def _readline(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise GenloomError(f"espeak-ng did not answer within {timeout:.0f} s")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                self.proc.wait(5)
                self.errors.seek(0)
                err = self.errors.read().decode(errors="replace").strip()
                raise GenloomError(f"espeak-ng failed for voice '{self.voice}': "
                                   f"{err or f'exit code {self.proc.returncode}'}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def _clause(self, clause: str) -> str:
        """Write one clause and the sentinel; read back the clause's phonemes."""
        data = clause.encode()[: self.MAX_LINE].decode(errors="ignore")
        self.proc.stdin.write(f"{data}\n{self.SENTINEL}\n".encode())
        self.proc.stdin.flush()
        out = []
        while (line := self._readline()) != self.end:
            if line:
                out.append(line)
        return " ".join(out)

    def phonemize(self, lines: list[str]) -> list[str]:
        with self.lock:
            try:
                return [self._clause(line) for line in lines]
            except (OSError, GenloomError):
                self.proc.kill()  # the next call starts a fresh program
                self.proc.wait(5)
                raise


_PROGRAMS: dict[tuple[int, str], _Espeak] = {}
_PROGRAMS_LOCK = threading.Lock()


def _espeak(lines: list[str], voice: str) -> list[str]:
    """IPA phonemes of each clause line (espeak-ng's output lines for it joined), language markers removed."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise GenloomError("espeak-ng is not installed; install the Debian package espeak-ng "
                           "(apt-get install espeak-ng)")
    if any(_Espeak.SENTINEL in line or len(line.encode()) > _Espeak.MAX_LINE for line in lines):
        return [_run_once(exe, line, voice) for line in lines]
    key = (os.getpid(), voice)
    with _PROGRAMS_LOCK:
        program = _PROGRAMS.get(key)
        if program is None or program.proc.poll() is not None:
            program = _PROGRAMS[key] = _Espeak(exe, voice)
    return [_LANG_SWITCH.sub("", out).strip() for out in program.phonemize(lines)]


def _run_once(exe: str, text: str, voice: str) -> str:
    """espeak-ng started for one text (a clause the line mode cannot take): its output lines joined."""
    proc = subprocess.run([exe, "-q", "--ipa", "-b", "1", "-v", voice], input=text.encode(), capture_output=True,
                          timeout=120, check=False)
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0 or err:
        raise GenloomError(f"espeak-ng failed for voice '{voice}': {err or f'exit code {proc.returncode}'}")
    return _LANG_SWITCH.sub("", " ".join(line.strip() for line in proc.stdout.decode().splitlines())).strip()


def phonemize(text: str, espeak_voice: str = "en-us") -> list[str]:
    """Text -> one string of IPA phonemes per sentence, punctuation kept as Piper's espeak front end keeps it."""
    parts = clauses(text)
    if not parts:
        return []
    lines = _espeak([c for c, _ in parts], espeak_voice)
    sentences, current = [], ""
    for phonemes, (_, mark) in zip(lines, parts):
        current += phonemes + mark + (" " if mark in ",:;" else "")
        if mark and mark in _SENTENCE_MARKS:
            sentences.append(current.strip())
            current = ""
    if current.strip():
        sentences.append(current.strip())
    return sentences


def phoneme_ids(phonemes: str, id_map: dict[str, list[int]], clusters: set[tuple[str, ...]] = frozenset()) -> list[int]:
    """A sentence's phonemes -> ids: BOS, a pad after each phoneme, EOS; code points (NFD), unknown ones skipped."""
    points = list(unicodedata.normalize("NFD", phonemes))
    if clusters:  # vowel clusters the voice has one id for ("a", "ɪ") -> "aɪ"
        longest, merged, i = max(len(c) for c in clusters), [], 0
        while i < len(points):
            n = next((n for n in range(min(longest, len(points) - i), 1, -1) if tuple(points[i:i + n]) in clusters), 1)
            merged.append("".join(points[i:i + n]))
            i += n
        points = merged
    ids = [*id_map[BOS], *id_map[PAD]]
    for p in points:
        if p in id_map:
            ids += [*id_map[p], *id_map[PAD]]
    return ids + list(id_map[EOS])


def check_speed(speed: float) -> float:
    lo, hi = SPEED_RANGE
    if not (lo <= float(speed) <= hi):  # also refuses NaN
        raise GenloomError(f"speed {speed} is out of range; choose a value from {lo} to {hi}")
    return float(speed)


def check_text(text: str) -> str:
    if not text or not text.strip():
        raise GenloomError("the input text is empty")
    if len(text) > MAX_INPUT:
        raise GenloomError(f"the input is {len(text)} characters; at most {MAX_INPUT} are allowed")
    return text


class Voice:
    """A loaded voice: `sentences(text)` splits, `render(sentence, speed, voice)` speaks one; the rest is shared."""

    sample_rate: int
    voices: list[str]  # speaker names
    name: str = ""

    def sentences(self, text: str) -> list[str]:
        raise NotImplementedError

    def render(self, sentence: str, *, speed: float, voice: str | None) -> np.ndarray:
        raise NotImplementedError

    def check_voice(self, voice: str | None) -> str:
        if voice is None:
            return self.voices[0]
        if voice not in self.voices:
            raise GenloomError(f"unknown voice '{voice}'; choose one of {choices(self.voices)}")
        return voice

    def stream(self, text: str, *, speed: float = 1.0, voice: str | None = None,
               progress: bool = False) -> Iterator[np.ndarray]:
        """Float32 mono audio, one array per sentence, each made when asked for (a bar on stderr with progress)."""
        check_text(text)
        speed, voice = check_speed(speed), self.check_voice(voice)
        sentences = self.sentences(text)
        with tqdm(total=len(sentences), unit="sentence", disable=not progress or len(sentences) < 3,
                  dynamic_ncols=True) as bar:
            for sentence in sentences:
                yield self.render(sentence, speed=speed, voice=voice)
                bar.update(1)

    def synthesize(self, text: str, *, speed: float = 1.0, voice: str | None = None) -> np.ndarray:
        """The whole text as one float32 mono array at `sample_rate`."""
        chunks = list(self.stream(text, speed=speed, voice=voice))
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


class PiperVoice(Voice):
    """A Piper voice: VITS in ONNX (`*.onnx` + `*.onnx.json`), run on onnxruntime with the espeak-ng front end."""

    def __init__(self, onnx_path: Path, *, threads: int = DEFAULT_THREADS):
        if ort is None:
            raise GenloomError("onnxruntime is not installed; pip install onnxruntime to run Piper voices")
        config_path = Path(f"{onnx_path}.json")
        try:
            cfg = json.loads(config_path.read_text(encoding="utf-8"))
            self.id_map = {k: list(v) for k, v in cfg["phoneme_id_map"].items()}
            self.sample_rate = int(cfg["audio"]["sample_rate"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise GenloomError(f"{config_path}: not a Piper voice config ({e})") from None
        missing = {BOS, EOS, PAD} - set(self.id_map)
        if missing:
            raise GenloomError(f"{config_path}: the phoneme map lacks {choices(missing)}")
        if cfg.get("phoneme_type", "espeak") != "espeak":
            raise GenloomError(f"{config_path}: phoneme_type '{cfg.get('phoneme_type')}' is not supported; "
                               f"genloom runs espeak voices")
        inference = cfg.get("inference", {})
        self.noise_scale = float(inference.get("noise_scale", 0.667))
        self.length_scale = float(inference.get("length_scale", 1.0))
        self.noise_w = float(inference.get("noise_w", 0.8))
        self.espeak_voice = cfg.get("espeak", {}).get("voice", "en-us")
        self.clusters = {tuple(c) for c in cfg.get("vowel_clusters", [])}
        speakers = cfg.get("speaker_id_map") or {}
        self.speaker_ids = {str(k): int(v) for k, v in speakers.items()}
        self.name = str(cfg.get("dataset") or onnx_path.name.split(".")[0])
        self.voices = sorted(self.speaker_ids, key=self.speaker_ids.get) or [self.name]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if SPIN else "0")
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a damaged file
            raise GenloomError(f"{onnx_path}: onnxruntime cannot load it ({e})") from None
        self.inputs = {i.name for i in self.session.get_inputs()}

    def sentences(self, text: str) -> list[str]:
        return phonemize(text, self.espeak_voice)

    def render(self, sentence: str, *, speed: float, voice: str | None) -> np.ndarray:
        """One sentence's phonemes -> audio, peak-normalised as Piper does (its `normalize_audio` default)."""
        ids = phoneme_ids(sentence, self.id_map, self.clusters)
        feed = {"input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array([self.noise_scale, self.length_scale / speed, self.noise_w], dtype=np.float32)}
        if "sid" in self.inputs:
            feed["sid"] = np.array([self.speaker_ids.get(voice or "", 0)], dtype=np.int64)
        audio = self.session.run(None, feed)[0].squeeze().astype(np.float32)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        audio = audio / peak if peak > 1e-8 else np.zeros_like(audio)
        return np.clip(audio, -1.0, 1.0)


def _load_piper(folder: Path, threads: int) -> Voice:
    onnx = sorted(p for p in folder.glob("*.onnx") if Path(f"{p}.json").exists())
    if not onnx:
        raise GenloomError(f"{folder}: no .onnx voice with its .onnx.json beside it")
    return PiperVoice(onnx[0], threads=threads)


class VoiceLoader(NamedTuple):
    """How one kind of voice is recognised in a folder and loaded from it."""
    matches: Callable[[Path], bool]
    load: Callable[[Path, int], Voice]


LOADERS: dict[str, VoiceLoader] = {  # kind of voice -> its loader (genloom.pipelines.voice adds "genloom")
    "piper": VoiceLoader(lambda folder: any(folder.glob("*.onnx.json")), _load_piper),
}


def register_loader(kind: str, matches: Callable[[Path], bool], load: Callable[[Path, int], Voice]) -> None:
    """Let another kind of voice (a genloom-trained one) be loaded by `load_voice`."""
    LOADERS[kind] = VoiceLoader(matches, load)


def voice_kind(folder: str | Path) -> str | None:
    """The kind of voice a folder holds (a LOADERS key), None when it holds no voice."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    return next((kind for kind, loader in LOADERS.items() if loader.matches(folder)), None)


def load_voice(folder: str | Path, *, threads: int = DEFAULT_THREADS) -> Voice:
    """A voice model folder -> a Voice (loader chosen by what the folder holds)."""
    path = Path(folder)
    kind = voice_kind(path)
    if kind is None:
        raise GenloomError(f"{folder} holds no voice model (kinds of voice: {choices(LOADERS)})")
    return LOADERS[kind].load(path, threads)
