"""Voices trained by genloom (a text-to-speech family, genloom.models.fastspeech) as `speech.Voice`s.

Registered in genloom.pipelines.speech's loader registry for folders holding `model.safetensors`, so
`genloom speak -m models/voice-...` and `/v1/audio/speech` speak with them: the same espeak-ng front end and
Piper id layout the teacher used (the id map travels in the model's config), the acoustic model's log-mels,
the Griffin-Lim vocoder (genloom.data.speech).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from genloom import families
from genloom.checkpoints import load_model
from genloom.data import speech as features
from genloom.errors import GenloomError
from genloom.pipelines import speech


class TrainedVoice(speech.Voice):
    """An exported genloom voice: phonemes -> model.synthesize -> log-mel -> Griffin-Lim -> float32 audio."""

    def __init__(self, folder: Path, threads: int = speech.DEFAULT_THREADS, gl_iters: int = features.GL_ITERS):
        loaded = load_model(folder)
        if families.get(loaded.family).kind != "audio":
            raise GenloomError(f"{folder} holds a '{loaded.family}' model, not a voice; text-to-speech families: "
                               f"{', '.join(families.of_kind('audio'))}")
        self.model, self.threads, self.gl_iters = loaded.model.eval(), threads, gl_iters
        self.id_map = {k: list(v) for k, v in json.loads(loaded.config.symbols).items()}
        self.espeak_voice = loaded.config.espeak_voice
        self.sample_rate = features.SAMPLE_RATE
        self.name = Path(folder).name
        self.voices = [self.name]

    def sentences(self, text: str) -> list[str]:
        return speech.phonemize(text, self.espeak_voice)

    def render(self, sentence: str, *, speed: float, voice: str | None) -> np.ndarray:
        ids = speech.phoneme_ids(sentence, self.id_map)
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            n = self.model.config.max_phonemes  # the encoder's positions: a longer sentence is spoken in pieces
            mel = torch.cat([self.model.synthesize(ids[i: i + n], speed=speed) for i in range(0, len(ids), n)], 1)
            wave = features.griffin_lim(mel, n_iter=self.gl_iters)
        finally:
            torch.set_num_threads(before)
        peak = float(np.abs(wave).max()) if wave.size else 0.0
        return (wave * (0.95 / peak) if peak > 1e-8 else wave).astype(np.float32)


def load_trained_voice(folder: Path, threads: int) -> speech.Voice:
    return TrainedVoice(folder, threads)


def is_trained_voice(folder: Path) -> bool:
    """A genloom model folder whose family makes audio (config.json names it; other genloom models are not voices)."""
    try:
        family = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("family")
    except (OSError, ValueError, AttributeError):
        return False
    return family in families.of_kind("audio")


speech.register_loader("genloom", is_trained_voice, load_trained_voice)
