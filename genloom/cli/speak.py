"""Speech commands: import a Piper voice, speak text into an audio file."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from genloom.cli.base import cli
from genloom.cli.provenance import label_options, labeler_from_options
from genloom.errors import GenloomError, choices
from genloom.files import atomic_write_bytes
from genloom.importers import import_voice
from genloom.pipelines import speech
from genloom.pipelines.audio_encode import FORMATS, check_format, finish
from genloom.safety import labels
from genloom.safety import watermark as watermarks

EXTENSIONS = {".wav": "wav", ".flac": "flac", ".mp3": "mp3", ".opus": "opus", ".ogg": "opus", ".pcm": "pcm",
              ".raw": "pcm"}


@cli.command("import-voice")
@click.argument("voice")
@click.option("--out", "-o", required=True, help="The model folder to write (models/voice-joe).")
def import_voice_cmd(voice, out):
    """Import a Piper voice (the PyPI voice package `joe`, or a .onnx path) as a model folder for speak and serve."""
    click.echo(f"imported {import_voice(voice, out)}")


@cli.command()
@click.argument("text", required=False)
@click.option("--model", "-m", "model_path", required=True, help="A voice model folder (models/voice-joe).")
@click.option("--out", "-o", required=True, help="The audio file to write; its extension picks the format.")
@click.option("--file", "text_file", type=click.Path(dir_okay=False), default=None,
              help="Read the text from this file ('-': standard input) instead of the argument.")
@click.option("--format", "fmt", default=None, help=f"One of {', '.join(FORMATS)} (default: from --out's extension).")
@click.option("--speed", type=float, default=1.0, show_default=True,
              help=f"{speech.SPEED_RANGE[0]} to {speech.SPEED_RANGE[1]}.")
@click.option("--voice", default=None, help="A speaker of a multi-speaker voice (default: its first).")
@click.option("--threads", type=int, default=speech.DEFAULT_THREADS, show_default=True, help="onnxruntime threads.")
@label_options
@click.option("--watermark", type=click.Choice(watermarks.MODES), default="on", show_default=True,
              help="Mark the audio invisibly with the installation's key (off: a warning).")
@click.option("--data-dir", default="genloom-data", show_default=True,
              help="Where the installation's watermark key and C2PA signing key (keys/) live.")
def speak(text, model_path, out, text_file, fmt, speed, voice, threads, watermark, data_dir, **label_kw):
    """Speak TEXT with a voice model into an audio file (wav, flac, mp3, opus, or raw 16-bit pcm)."""
    if text_file is not None:
        if text is not None:
            raise GenloomError("give the text as an argument or with --file, not both")
        text = sys.stdin.read() if text_file == "-" else Path(text_file).read_text(encoding="utf-8")
    if text is None:
        raise GenloomError("give the text to speak as an argument or with --file")
    fmt = fmt or EXTENSIONS.get(Path(out).suffix.lower())
    if fmt is None:
        raise GenloomError(f"cannot tell the format of '{out}'; use an extension ({choices(EXTENSIONS)}) or --format")
    speech.check_text(text), speech.check_speed(speed), check_format(fmt)
    labeler = labeler_from_options(data_dir, **label_kw)  # a bad switch or a missing certificate: one line, first
    for line in labeler.warnings():
        click.echo(f"genloom: warning: {line}", err=True)
    marks = watermarks.load(data_dir, watermark, where="genloom speak")
    model = speech.load_voice(model_path, threads=threads)
    chunks = list(model.stream(text, speed=speed, voice=voice, progress=True))
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    params = {"speed": speed, "voice": voice or model.voices[0], "format": fmt}
    meta = labels.OutputMeta(labels.new_produce_id("gl"), model=str(model_path), parameters=params,
                             title=Path(out).name)
    atomic_write_bytes(out, finish(audio, model.sample_rate, fmt, meta, labeler, marks))
    labels.log_output(out, meta, fmt)  # the folder's aigc-log.jsonl (raw pcm's only label)
    click.echo(f"wrote {out} ({len(audio) / model.sample_rate:.1f} s of speech, {len(chunks)} sentences, "
               f"{fmt}, {model.sample_rate} Hz, voice {voice or model.voices[0]})")
