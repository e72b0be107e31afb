"""The `genloom` command group every command module adds itself to, loaded one module at a time."""

from __future__ import annotations

import importlib

import click
import torch

COMMANDS = {  # command -> the module of genloom.cli that defines it (imported when the command is used)
    "data": "train", "train": "train", "export": "train", "import-hf": "train", "export-hf": "train",
    "export-gguf": "train",
    "generate": "generate", "eval": "evaluate", "evalset": "evaluate", "import-gan": "images", "codes": "images",
    "reconstruct": "images", "decode": "images", "attach-prior": "images", "serve": "serve", "keys": "serve", "worker": "serve",
    "kb": "kb", "provenance": "provenance", "signing": "provenance", "watermark": "watermark", "moderate": "moderate",
    "import-voice": "speak", "speak": "speak", "distill-voice": "voice",
    "transcribe": "asr", "import-asr": "asr",
}


class LazyGroup(click.Group):
    """click's lazily loaded subcommands: `genloom data` does not import the server, nor `genloom serve` the
    evaluation stack; each module still imports everything it needs at its top."""

    def list_commands(self, ctx) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx, name):
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(f"genloom.cli.{COMMANDS[name]}")  # its decorators add its commands here
        return super().get_command(ctx, name)


def _threads(n: int) -> None:
    if n:
        torch.set_num_threads(n)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="genloom")
def cli():
    """genloom: train, sample, evaluate and serve generative models on your own machine."""
