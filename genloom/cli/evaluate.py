"""`genloom eval` and `genloom evalset`: metrics with their protocols, JSON out, optional HTML report."""

from __future__ import annotations

import json

import click

from genloom import devices, distributed
from genloom import evaluate as ev
from genloom.cli.base import _threads, cli
from genloom.data import evalsets
from genloom.errors import GenloomError
from genloom.report import jsonable, write_report


@cli.command("eval")
@click.option("--model", "-m", "models", multiple=True, help="A model or run folder; repeat to compare several.")
@click.option("--data", "-d", "data_dir", default=None, help="Text: a folder prepared by `genloom data` (perplexity).")
@click.option("--evalset", default=None, help="Text: a held-out set (chat, translation) or a .jsonl of prompt/reference.")
@click.option("--hyps", default=None, help="Text: a file of generated lines to score.")
@click.option("--refs", default=None, help="Text: the reference lines for --hyps (one per line).")
@click.option("--samples", "sample_dirs", multiple=True, help="Images: a folder of generated images; repeat to compare.")
@click.option("--reference", default=None, help="Images: fashion-mnist, mnist5k, digits or a folder (its test split).")
@click.option("--features", default=None, help="Images: a genloom classifier (default models/fmnist-features) or torchscript:PATH.")
@click.option("--recon", default=None, help="Images: a folder of reconstructions, scored against --originals.")
@click.option("--originals", default=None, help="Images: the originals of --recon, same file names (PSNR, SSIM).")
@click.option("--audio", default=None, help="Audio: a file or folder of WAV/FLAC/Ogg files.")
@click.option("--texts", default=None, help="Audio: what each file says, one line per file in name order (WER).")
@click.option("--reference-audio", default=None,
              help="Audio: reference recordings of the same words, same file names (mel-cepstral distortion).")
@click.option("--asr", "asr_model", default=None,
              help="Audio: the recognizer for WER (a Whisper folder, whisper-base, pocketsphinx; default whisper-base "
                   "when imported).")
@click.option("--midi", "midi_dirs", multiple=True,
              help="Music: a folder of MIDI files scored against --data's held-out pieces; repeat to compare.")
@click.option("--bars", type=int, default=ev.MUSIC_BARS, show_default=True,
              help="Music: compare every set's first N bars (0: whole pieces).")
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True)
@click.option("--context", type=int, default=0, help="Perplexity window (default: the model's block_size).")
@click.option("--stride", type=int, default=0, help="Perplexity stride (default: context // 2).")
@click.option("--max-tokens", type=int, default=0, help="Score only the first N tokens (0: all).")
@click.option("--limit", "-n", type=int, default=0, help="At most N eval-set prompts (default 100) or images (0: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--report", "report_dir", default=None, help="Write report.json and a self-contained report.html here.")
@click.option("--threads", type=int, default=0)
@click.option("--device", default="auto", show_default=True, help="auto (a GPU when there is one), cpu, cuda, cuda:N, mps.")
def eval_(models, data_dir, evalset, hyps, refs, sample_dirs, reference, features, recon, originals, audio, texts,
          reference_audio, asr_model, midi_dirs, bars, split, context,
          stride, max_tokens, limit, seed, report_dir, threads, device):
    """Evaluate models or generated samples; metrics with their protocols, JSON out, optional HTML report.

    \b
    genloom eval -m models/kjv -d data/kjv-bpe2048               perplexity, bits per char
    genloom eval -m models/chat --evalset chat --report out/     BLEU, chrF, ROUGE-L, MiniLM similarity
    genloom eval --hyps out.txt --refs ref.txt                   the same on files
    genloom eval --samples imgs/ --reference fashion-mnist       FID (+ floor), KID, IS-style, precision/recall
    genloom eval -m models/fmnist-features                       a classifier's test accuracy
    genloom eval -m models/fmnist-dcgan -n 1000                  an image generator: FID (with its floor), KID, P/R
    genloom eval --recon out/ --originals in/                   PSNR, SSIM of reconstructions
    genloom eval --audio wavs/ --texts lines.txt                 duration, loudness, Whisper WER, ASR real-time factor
    genloom eval --audio wavs/ --reference-audio refs/           + mel-cepstral distortion against recordings
    genloom eval -m models/chorales -d data/chorales-remi -n 32   music: NLL/token, MusPy features vs held-out
    genloom eval --midi gen/ -d data/chorales-remi                a folder of MIDI vs the held-out pieces

    Under torchrun, a model's samples (images, eval-set replies) are split over the ranks; rank 0 scores
    them and prints the report.
    """

    _threads(threads)
    if bars < 0:
        raise GenloomError(f"--bars must be >= 0 (0: whole pieces), got {bars}")
    device = devices.resolve(device)
    distributed.setup(device)
    try:
        _eval(models, data_dir, evalset, hyps, refs, sample_dirs, reference, features, recon, originals, audio, texts,
              reference_audio, asr_model, midi_dirs, bars, split, context, stride, max_tokens, limit, seed, report_dir, device)
    finally:
        distributed.teardown()


def _eval(models, data_dir, evalset, hyps, refs, sample_dirs, reference, features, recon, originals, audio, texts,
          reference_audio, asr_model, midi_dirs, bars, split, context, stride, max_tokens, limit, seed, report_dir, device):
    sections = []
    for m in models:
        if evalset:
            sections.append(ev.evalset_section(m, evalset, limit=limit or 100, seed=seed, device=device))
        elif data_dir and ev.is_music_data(data_dir):
            if distributed.is_main():
                sections.append(ev.music_model_section(m, data_dir, n=limit or ev.MUSIC_SAMPLES, bars=bars, seed=seed))
        elif data_dir:
            if distributed.is_main():
                sections.append(ev.perplexity_section(m, data_dir, split=split, context=context, stride=stride,
                                                      max_tokens=max_tokens, device=device))
        else:
            sections.append(ev.model_section(m, reference, features, n=limit or 1000, seed=seed, device=device))
    if not distributed.is_main():  # its share of the samples is on rank 0, which scores the rest alone
        return
    if hyps:
        sections.append(ev.files_section(hyps, refs))
    elif refs:
        raise GenloomError("--refs needs --hyps (the generated lines to score)")
    for d in sample_dirs:
        if not reference:
            raise GenloomError("--samples needs --reference (fashion-mnist, mnist5k, digits or an image folder)")
        sections.append(ev.images_section(d, reference, features, limit=limit, seed=seed))
    if recon or originals:
        if not (recon and originals):
            raise GenloomError("--recon and --originals go together (reconstructions and their originals)")
        sections.append(ev.reconstruction_section(recon, originals))
    for d in midi_dirs:
        if not data_dir:
            raise GenloomError("--midi needs --data (a music folder prepared by `genloom data`: its held-out pieces)")
        sections.append(ev.midi_section(d, data_dir, bars=bars))
    if audio:
        sections.append(ev.audio_section(audio, texts, references=reference_audio, asr_model=asr_model))
    elif texts or reference_audio:
        raise GenloomError(f"{'--texts' if texts else '--reference-audio'} needs --audio (the files to score)")
    if not sections:
        raise GenloomError("nothing to evaluate: give --model, --hyps, --samples, --recon, --audio or --midi "
                           "(see genloom eval -h)")
    if report_dir:
        json_path, html_path = write_report(report_dir, sections)
        click.echo(f"report: {html_path} ({json_path})", err=True)
    results = [s.raw for s in sections]
    click.echo(json.dumps(jsonable(results[0] if len(results) == 1 else results), indent=2, ensure_ascii=False))


@cli.command()
@click.argument("name", type=click.Choice(["chat", "translation"]))
@click.option("--out", "-o", required=True, help="JSONL file to write: one {prompt, reference, id} per line.")
@click.option("--limit", "-n", type=int, default=0, help="A seeded sample of N pairs (0: all).")
@click.option("--all-pairs", is_flag=True, help="chat: keep held-out pairs whose dialogue also occurs in training.")
def evalset(name, out, limit, all_pairs):
    """Write a held-out evaluation set: chat (chatterbot replies) or translation (EN -> ES Bible verses)."""
    if name == "chat":
        pairs = evalsets.chat_eval_set(limit=limit, unseen_only=not all_pairs)
    else:
        pairs = evalsets.translation_eval_set(limit=limit)
    evalsets.write_jsonl(pairs, out)
    click.echo(f"{out}: {len(pairs)} held-out {name} pairs")
