"""Model families: one file each, a registry name -> (config class, model class)."""

from __future__ import annotations

import dataclasses

from genloom.errors import GenloomError, choices
from genloom.models.classifier import Classifier, ClassifierConfig
from genloom.models.gan import DCGAN, DCGANConfig
from genloom.models.gpt import GPT, GPTConfig
from genloom.models.unet import DiffusionModel, UNetConfig
from genloom.models.vae import VAE, VQVAE, VAEConfig, VQVAEConfig

MODELS: dict[str, tuple[type, type]] = {
    "gpt": (GPTConfig, GPT),
    "classifier": (ClassifierConfig, Classifier),
    "dcgan": (DCGANConfig, DCGAN),
    "diffusion": (UNetConfig, DiffusionModel),
    "vae": (VAEConfig, VAE),
    "vqvae": (VQVAEConfig, VQVAE),
}
IMAGE_FAMILIES = ("dcgan", "diffusion", "vae", "vqvae")


def family(name: str) -> tuple[type, type]:
    if name not in MODELS:
        raise GenloomError(f"unknown model family '{name}'; choose one of {choices(MODELS)}")
    return MODELS[name]


def model_config_from_dict(name: str, data: dict):
    from genloom.config import from_dict

    config_cls, _ = family(name)
    return from_dict(config_cls, data, "model.")


def build_model(name: str, config):
    _, model_cls = family(name)
    return model_cls(config)


def config_to_dict(config) -> dict:
    return dataclasses.asdict(config)
