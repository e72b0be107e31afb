"""The family registry: one record per model family, and every other module asks the record.

A record names the family, the kind of output it makes (text, image, label; later audio and music), its
config and model classes, its training task, its model-card writer and the sampling options it takes.
Adding a family means a model file, a task, and one `register(Family(...))` call (docs/ARCHITECTURE.md).
Families outside genloom register themselves from a module named in GENLOOM_PLUGINS (comma-separated)
or in the `genloom.families` entry-point group; `load_plugins()` imports them once.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

from genloom import cards, config
from genloom.config import RunConfig, from_dict
from genloom.errors import GenloomError, choices
from genloom.models.fastspeech import FastSpeech, FastSpeechConfig
from genloom.models.classifier import Classifier, ClassifierConfig
from genloom.models.gan import DCGAN, DCGANConfig
from genloom.models.gpt import GPT, GPTConfig
from genloom.models.textclf import TextClassifier, TextClassifierConfig
from genloom.models.unet import DiffusionModel, UNetConfig
from genloom.models.vae import VAE, VQVAE, VAEConfig, VQVAEConfig
from genloom.objectives import (ClassifyTask, DiffusionTask, GANTask, LMTask, ModerationTask, TTSTask, VAETask,
                                VQVAETask)

KINDS = ("text", "image", "label", "audio")  # what a family's models make

TEXT_OPTIONS = frozenset({"max_new_tokens", "min_new_tokens", "temperature", "top_k", "top_p", "min_p",
                          "repetition_penalty", "presence_penalty", "frequency_penalty", "stop", "seed"})


@dataclass(frozen=True)
class Family:
    """Everything genloom knows about one model family."""

    name: str
    kind: str  # one of KINDS
    config_cls: type
    model_cls: type
    task_cls: type
    write_card: Callable[..., Path]  # (folder, card, name, command) -> README.md
    options: frozenset | None = None  # the generation options it takes (None: what its model class declares)
    loss_name: str = ""  # what its validation loss measures, for cards and reports

    @property
    def sampling_options(self) -> frozenset:
        """The generation options the family takes: the record's, else the model class's declaration."""
        return self.options if self.options is not None else getattr(self.model_cls, "sampling_options", frozenset())

    def model_config(self, data: dict):
        """The family's typed model config from a dict; unknown keys are errors naming the valid ones."""
        return from_dict(self.config_cls, data, "model.")

    def build(self, model_config):
        return self.model_cls(model_config)


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family (or replace one of the same name, so a plugin can override a built-in)."""
    if family.kind not in KINDS:
        raise GenloomError(f"unknown family kind '{family.kind}'; choose one of {choices(KINDS)}")
    FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    FAMILIES.pop(name, None)


def get(name: str) -> Family:
    if name not in FAMILIES:
        load_plugins()
    if name not in FAMILIES:
        raise GenloomError(f"unknown model family '{name}'; choose one of {choices(FAMILIES)}")
    return FAMILIES[name]


def of_kind(kind: str) -> list[str]:
    return sorted(name for name, f in FAMILIES.items() if f.kind == kind)


_plugins_loaded = False


def load_plugins() -> None:
    """Import the modules that register families from outside genloom (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    names = [n.strip() for n in os.environ.get("GENLOOM_PLUGINS", "").split(",") if n.strip()]
    names += [ep.value for ep in entry_points(group="genloom.families")]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise GenloomError(f"cannot import the family plugin '{name}' ({e})") from None


def load_run_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """A run config read and checked whole, before any data is read: its keys, then the family's model keys."""
    return check_run_config(config.load_run_config(path, overrides))


def run_config_from_dict(data: dict) -> RunConfig:
    """The same checks for a config built in code (the fine-tuning worker)."""
    return check_run_config(config.check(from_dict(RunConfig, data)))


def check_run_config(cfg: RunConfig) -> RunConfig:
    get(cfg.family).model_config(cfg.model)
    return cfg


register(Family("gpt", "text", GPTConfig, GPT, LMTask, cards.text_card, TEXT_OPTIONS,
                loss_name="next-token cross-entropy, nats/token"))
register(Family("classifier", "label", ClassifierConfig, Classifier, ClassifyTask, cards.classifier_card,
                loss_name="cross-entropy, nats"))
register(Family("textclf", "label", TextClassifierConfig, TextClassifier, ModerationTask, cards.textclf_card,
                loss_name="binary cross-entropy per label, nats"))
register(Family("dcgan", "image", DCGANConfig, DCGAN, GANTask, cards.image_card,
                loss_name="discriminator / generator losses"))
register(Family("diffusion", "image", UNetConfig, DiffusionModel, DiffusionTask, cards.image_card,
                loss_name="noise-prediction MSE"))
register(Family("vae", "image", VAEConfig, VAE, VAETask, cards.image_card,
                loss_name="negative ELBO, nats per image"))
register(Family("vqvae", "image", VQVAEConfig, VQVAE, VQVAETask, cards.image_card,
                loss_name="reconstruction MSE + commitment"))
register(Family("fastspeech", "audio", FastSpeechConfig, FastSpeech, TTSTask, cards.audio_card,
                loss_name="mel L1 (log-mel, nats) + log-duration MSE"))
