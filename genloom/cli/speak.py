"""Speech commands: import a Piper voice, speak text into an audio file."""

from __future__ import annotations

import click

from genloom.cli.base import cli
from genloom.importers import import_voice


@cli.command("import-voice")
@click.argument("voice")
@click.option("--out", "-o", required=True, help="The model folder to write (models/voice-joe).")
def import_voice_cmd(voice, out):
    """Import a Piper voice (the PyPI voice package `joe`, or a .onnx path) as a model folder for speak and serve."""
    click.echo(f"imported {import_voice(voice, out)}")
