"""`genloom distill-voice`: an imported voice reads held-apart text into an LJSpeech-layout folder."""

from __future__ import annotations

import json

import click

from genloom.cli.base import cli
from genloom.files import disk_full_as_error
from genloom.pipelines.distill import TEXT_SOURCES, distill


@cli.command("distill-voice")
@click.option("--teacher", "-m", required=True, help="A Piper voice folder (genloom import-voice joe --out models/voice-joe).")
@click.option("--out", "-o", required=True, help="The LJSpeech-layout folder to write (resumed when it exists).")
@click.option("-n", "n", type=int, default=1000, show_default=True, help="Sentences the teacher reads.")
@click.option("--heldout", type=int, default=120, show_default=True,
              help="Sentences kept apart (heldout.txt): never read, the voice's test set.")
@click.option("--source", "sources", multiple=True, type=click.Choice(TEXT_SOURCES), default=TEXT_SOURCES,
              show_default=True, help="Text to read (repeat the option for several).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sentence shuffle.")
def distill_voice(teacher, out, n, heldout, sources, seed):
    """Distil a speech corpus: the teacher voice reads n sentences (WAVs, metadata.csv, its phoneme durations)."""
    with disk_full_as_error():
        click.echo(json.dumps(distill(teacher, out, n=n, heldout=heldout, sources=tuple(sources), seed=seed)))
