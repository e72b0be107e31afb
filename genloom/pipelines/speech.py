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
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from genloom.errors import GenloomError, choices

try:
    import onnxruntime as ort
except ImportError:  # optional: named in the error when a voice is loaded
    ort = None

ESPEAK = "espeak-ng"
MAX_INPUT = 4096  # characters: OpenAI's limit for /v1/audio/speech, also the CLI's
SPEED_RANGE = (0.25, 4.0)
DEFAULT_THREADS = 2
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


def _espeak(lines: list[str], voice: str) -> list[str]:
    """Run espeak-ng once over `lines` (one clause a line): its IPA output lines, language markers removed."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise GenloomError("espeak-ng is not installed; install the Debian package espeak-ng "
                           "(apt-get install espeak-ng)")
    proc = subprocess.run([exe, "-q", "--ipa", "-b", "1", "-v", voice], input="\n".join(lines).encode(),
                          capture_output=True, timeout=120)
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0 or err:
        raise GenloomError(f"espeak-ng failed for voice '{voice}': {err or f'exit code {proc.returncode}'}")
    out = proc.stdout.decode()
    return [_LANG_SWITCH.sub("", line).strip() for line in out.splitlines() if line.strip()]


def phonemize(text: str, espeak_voice: str = "en-us") -> list[str]:
    """Text -> one string of IPA phonemes per sentence, punctuation kept as Piper's espeak front end keeps it."""
    parts = clauses(text)
    if not parts:
        return []
    lines = _espeak([c for c, _ in parts], espeak_voice)
    if len(lines) != len(parts):  # espeak broke a clause itself (a dash, an abbreviation): one call each
        lines = [" ".join(_espeak([c], espeak_voice)) for c, _ in parts]
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

    def stream(self, text: str, *, speed: float = 1.0, voice: str | None = None) -> Iterator[np.ndarray]:
        """Float32 mono audio, one array per sentence, each made when asked for."""
        check_text(text)
        speed, voice = check_speed(speed), self.check_voice(voice)
        for sentence in self.sentences(text):
            yield self.render(sentence, speed=speed, voice=voice)

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


LOADERS: dict[str, Callable[[Path, int], Voice]] = {  # a file pattern the folder holds -> its voice loader
    "*.onnx.json": _load_piper,
}


def register_loader(pattern: str, loader: Callable[[Path, int], Voice]) -> None:
    """Let another kind of voice (a genloom-trained one) be loaded by `load_voice`."""
    LOADERS[pattern] = loader


def voice_kind(folder: str | Path) -> str | None:
    """The LOADERS pattern a folder matches, None when it holds no voice."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    return next((pattern for pattern in LOADERS if any(folder.glob(pattern))), None)


def load_voice(folder: str | Path, *, threads: int = DEFAULT_THREADS) -> Voice:
    """A voice model folder -> a Voice (loader chosen by what the folder holds)."""
    path = Path(folder)
    kind = voice_kind(path)
    if kind is None:
        raise GenloomError(f"{folder} holds no voice model (expected one of: {choices(LOADERS)})")
    return LOADERS[kind](path, threads)


from genloom.pipelines import voice as _trained_voices  # noqa: E402,F401 (registers genloom-trained voices' loader)
