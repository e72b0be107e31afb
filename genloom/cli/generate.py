"""`genloom generate`: text through the decoding loop, images through the image pipeline."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click
import torch

from genloom import devices, distributed, families
from genloom.checkpoints import load_model
from genloom.cli.base import _threads, cli
from genloom.cli.provenance import label_options, labeler_from_options
from genloom.data.images import read_png_parameters
from genloom.errors import GenloomError
from genloom.files import atomic_write_bytes
from genloom.models.runtime import DTYPES, default_dtype, prepare
from genloom.pipelines import images
from genloom.pipelines import music
from genloom.safety import labels as _labels
from genloom.safety import watermark as watermarks
from genloom.sample import SamplingParams, stream_text
from genloom.sample import generate as generate_text


@cli.command()
@click.option("--model", "-m", "model_path", default=None, help="A model folder, a run folder or a .pt checkpoint.")
@click.option("--prompt", "-p", "prompts", multiple=True, help="Prompt text; repeat for a batch.")
@click.option("--prompt-file", type=click.File("r", encoding="utf-8"), help="One prompt per line.")
@click.option("--max-new-tokens", "-N", type=int, default=None, help="Text: tokens to add (default 200).")
@click.option("--temperature", "-T", type=float, default=None,
              help="0 for greedy decoding (default: 0.8 for text, 1.0 for a VQ-VAE prior).")
@click.option("--top-k", type=int, default=None, help="Text and VQ-VAE priors (default 0: off).")
@click.option("--top-p", type=float, default=None, help="Text and VQ-VAE priors (default 1.0: off).")
@click.option("--min-p", type=float, default=None, help="Text and VQ-VAE priors (default 0.0: off).")
@click.option("--repetition-penalty", type=float, default=None, help="Text (default 1.0: off).")
@click.option("--stop", multiple=True, help="Text: stop string; repeat for several.")
@click.option("--num-samples", "-n", type=int, default=1, show_default=True, help="Samples per prompt (text), images.")
@click.option("--seed", type=int, default=None, help="Same seed, same output; image i is remade alone by seed + i.")
@click.option("--stream/--no-stream", default=None, help="Text: print tokens as they come (default: on for one sample).")
@click.option("--json", "as_json", is_flag=True, help="Print the completions, or the image files with their parameters, as JSON.")
@click.option("--threads", type=int, default=0, help="Torch threads (0: default).")
@click.option("--dtype", type=click.Choice(DTYPES), default=None,
              help="Text: run the weights in this dtype (default: int8 for an int8 export, else float32).")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="Text: compile the decode step ahead of time (AOTInductor, cached on disk per model; default off).")
@click.option("--out", "out_dir", default=None, help="Images, music: the folder for the files (default outputs); "
              "text: a file (.md/.txt) to save the completions in, with the AIGC label as YAML front matter.")
@click.option("--sampler", default=None, help="Diffusion: ddpm, ddim, dpmpp_2m (default ddim).")
@click.option("--steps", type=int, default=None, help="Diffusion: sampling steps (default 50).")
@click.option("--guidance", type=float, default=None, help="Diffusion: classifier-free guidance scale (needs a condition).")
@click.option("--label", "labels", multiple=True, help="Images: class label(s), an index or a class name, cycled over the images.")
@click.option("--eta", type=float, default=None, help="Diffusion: DDIM eta (0 deterministic).")
@click.option("--from-png", "from_png", default=None, help="Images: remake the image a genloom PNG holds the parameters of.")
@click.option("--primer", default=None, help="Music: a MIDI file to continue.")
@click.option("--bars", type=int, default=None, help=f"Music: length of the new music in bars (default 8, at most {music.MAX_BARS}).")
@click.option("--seconds", type=float, default=None, help=f"Music: length of the new music in seconds (at most {music.MAX_SECONDS:g}).")
@click.option("--tempo", type=float, default=None, help="Music: quarter notes per minute (default: the primer's, else 100).")
@click.option("--mp3", is_flag=True, help="Music: also write an MP3 (LAME).")
@click.option("--device", default="auto", show_default=True, help="auto (a GPU when there is one), cpu, cuda, cuda:N, mps.")
@label_options
@click.option("--watermark", type=click.Choice(watermarks.MODES), default="on", show_default=True,
              help="Mark the text, images or audio invisibly with the installation's key (off: a warning).")
@click.option("--data-dir", default="genloom-data", show_default=True,
              help="Where the installation's watermark key and C2PA signing key (keys/) live.")
def generate(model_path, prompts, prompt_file, max_new_tokens, temperature, top_k, top_p, min_p,
             repetition_penalty, stop, num_samples, seed, stream, as_json, threads, dtype, compile_, out_dir, sampler,
             steps, guidance, labels, eta, from_png, primer, bars, seconds, tempo, mp3, device, watermark, data_dir,
             **label_kw):
    """Sample text (KV cache, temperature/top-k/top-p/min-p, penalties, stops, seeds) or images (-n, --seed, --out).

    \b
    Images: every PNG carries its parameters; --from-png FILE remakes that image (bitwise). A prompt is
    the condition of a text-conditional model, names a class of a class-conditional one (or give --label),
    and is an error for an unconditional one (the API accepts it and reports it unused).
    Under torchrun the images are split over the ranks (image i from seed + i as ever); rank 0 writes them.
    """

    _threads(threads)
    labeler = labeler_from_options(data_dir, **label_kw)  # a bad switch or a missing certificate: one line, first
    for line in labeler.warnings():
        click.echo(f"genloom: warning: {line}", err=True)
    marks = watermarks.load(data_dir, watermark, where="genloom generate")
    device = devices.resolve(device)
    distributed.setup(device)
    try:
        _generate(model_path, prompts, prompt_file, max_new_tokens, temperature, top_k, top_p, min_p,
                  repetition_penalty, stop, num_samples, seed, stream, as_json, dtype, compile_, out_dir, sampler, steps,
                  guidance, labels, eta, from_png, primer, bars, seconds, tempo, mp3, device, labeler, marks)
    finally:
        distributed.teardown()


def _generate(model_path, prompts, prompt_file, max_new_tokens, temperature, top_k, top_p, min_p,
              repetition_penalty, stop, num_samples, seed, stream, as_json, dtype, compile_, out_dir, sampler, steps,
              guidance, labels, eta, from_png, primer, bars, seconds, tempo, mp3, device, labeler, marks):
    prompts = list(prompts) + ([ln.rstrip("\n") for ln in prompt_file if ln.strip()] if prompt_file else [])
    text_only = {"-N/--max-new-tokens": max_new_tokens, "--repetition-penalty": repetition_penalty,
                 "--stop": stop or None, "--dtype": dtype, "--compile": compile_}
    image_only = {"--sampler": sampler, "--steps": steps, "--guidance": guidance,
                  "--label": labels or None, "--eta": eta, "--from-png": from_png}
    music_only = {"--primer": primer, "--bars": bars, "--seconds": seconds, "--tempo": tempo, "--mp3": mp3 or None}
    if from_png:
        given = {"--seed": seed, "-n": num_samples if num_samples != 1 else None, "--prompt": prompts or None,
                 **{k: v for k, v in image_only.items() if k != "--from-png"},
                 "--temperature": temperature, "--top-k": top_k, "--top-p": top_p, "--min-p": min_p}
        _refuse(given, "--from-png takes every option from the PNG's parameters; drop")
        params = _png_parameters(from_png)
        model_path = model_path or params.get("model")
    if not model_path:
        raise GenloomError("give a model with --model (or a genloom PNG with --from-png)")
    lm = load_model(model_path, device=device)
    if music.is_music_model(lm):
        _refuse({**text_only, **image_only, "--prompt": prompts or None,
                 "-n": num_samples if num_samples != 1 else None, "--stream": stream},
                "a music model takes --primer, --bars/--seconds, --tempo, --seed, --mp3, --out and the sampling "
                "options; drop")
        opts = music.MusicOptions(bars=bars, seconds=seconds, tempo=tempo, seed=seed,
                                  temperature=1.0 if temperature is None else temperature, top_k=top_k or 0,
                                  top_p=1.0 if top_p is None else top_p, min_p=min_p or 0.0,
                                  repetition_penalty=1.0 if repetition_penalty is None else repetition_penalty)
        opts.check()
        primer_bytes = music.read_primer(primer) if primer else None
        music.fluidsynth(), music.soundfont()  # a missing renderer is named before any sampling
        piece = music.compose(lm, opts, primer_bytes)
        written = music.write_outputs(piece, out_dir or "outputs", f"music-{piece.seed}", mp3=mp3,
                                      finish=_labels.finisher(labeler, str(model_path), piece.parameters),
                                      wav_filter=_labels.wav_cue(labeler), watermarks=marks)
        if as_json:
            click.echo(json.dumps({"files": [str(p) for p in written], "seconds": round(piece.seconds, 3),
                                   "new_tokens": piece.new_tokens, "finish_reason": piece.finish_reason,
                                   "parameters": piece.parameters}, indent=2))
        else:
            click.echo(f"wrote {', '.join(str(p) for p in written)} ({piece.seconds:.1f} s of music, seed {piece.seed})")
        return
    _refuse(music_only, "music options need a music model; drop")
    if images.is_image_model(lm):
        _refuse(text_only, "text options do not apply to images; drop")
        if stream:
            raise GenloomError("--stream prints text as it comes; images are written whole: drop --stream")
        if from_png:
            opts = images.options_from_png(lm, params, str(model_path))
        else:
            opts = images.ImageOptions(model=str(model_path), n=num_samples, seed=seed, sampler=sampler, steps=steps,
                                       guidance=guidance, eta=eta, temperature=temperature, top_k=top_k, top_p=top_p,
                                       min_p=min_p, labels=list(labels), prompts=prompts)
        result = images.generate(lm, opts, strict=True, watermarks=marks, visible=_labels.pixel_marker(labeler))
        if result is None:  # another rank's images went to rank 0, which writes them
            return
        written = images.write_images(result, out_dir or "outputs", grid=result.plan.n > 1,
                                      finish=_labels.finisher(labeler, str(model_path), marked=True))
        if as_json:
            click.echo(json.dumps([{"file": str(p), "parameters": meta} for p, meta in written], ensure_ascii=False,
                                  indent=2))
        elif len(written) == 1:
            click.echo(f"wrote {written[0][0]} (its parameters in the PNG)")
        else:
            click.echo(f"wrote {len(written) - 1} images and {written[-1][0]} (parameters in each PNG)")
        return
    lm.model = prepare(lm.model, dtype or default_dtype(lm.meta), bool(compile_), device=str(device))
    _generate_text(lm, model_path, prompts, image_only, num_samples, stream, as_json, out_dir, labeler, marks,
                   max_new_tokens=200 if max_new_tokens is None else max_new_tokens,
                   temperature=0.8 if temperature is None else temperature, top_k=top_k or 0,
                   top_p=1.0 if top_p is None else top_p, min_p=min_p or 0.0,
                   repetition_penalty=1.0 if repetition_penalty is None else repetition_penalty, stop=list(stop),
                   seed=seed)


def _refuse(options: dict, why: str) -> None:
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise GenloomError(f"{why} {', '.join(given)}")


def _png_parameters(path) -> dict:
    try:
        return read_png_parameters(path)
    except (OSError, ValueError) as e:
        raise GenloomError(f"{path}: not a readable PNG ({e})") from None


def _generate_text(lm, model_path, prompts, image_only, num_samples, stream, as_json, out_file, labeler, marks,
                   **sampling):
    if families.get(lm.family).kind != "text":
        raise GenloomError(f"{model_path} is a '{lm.family}' model; text generation needs one of "
                           f"{', '.join(families.of_kind('text'))}")
    _refuse(image_only, "image options do not apply to a text model; drop")
    if not prompts:
        raise GenloomError("give a prompt with --prompt or --prompt-file")
    if num_samples < 1:
        raise GenloomError(f"--num-samples must be >= 1, got {num_samples}")
    batch = [p for p in prompts for _ in range(num_samples)]
    if stream and (len(batch) > 1 or as_json):
        why = "--json prints whole completions" if as_json else f"this asks for {len(batch)} (prompts x -n)"
        raise GenloomError(f"--stream prints one sample as it comes and {why}: drop --stream")
    sp = SamplingParams(**sampling)
    sp.check()
    longest = max(len(lm.tokenizer.encode(p)) for p in batch)
    if longest > lm.config.block_size:  # before anything is printed: a bad input gives only the error line
        raise GenloomError(f"prompt of {longest} tokens exceeds the model's context of {lm.config.block_size} tokens")
    room = lm.config.block_size - longest + 1
    if room < sp.max_new_tokens:
        click.echo(f"note: context of {lm.config.block_size} tokens leaves room for {room} new tokens", err=True)
    if stream and out_file:
        raise GenloomError("--stream prints text as it comes; --out saves whole completions: drop --stream")
    if stream is None:
        stream = len(batch) == 1 and not as_json and not out_file and distributed.world() == 1
    if stream:
        click.echo(_labels.text_notice("", labeler.policy), nl=False)
        click.echo(batch[0], nl=False)
        for _, delta in stream_text(lm.model, lm.tokenizer, batch, sp, marks.processors(lm.config.vocab_size)):
            click.echo(delta, nl=False)
        click.echo()
        return
    outs = _sharded_text(lm, batch, sp, marks)
    if outs is None:  # under torchrun: rank 0 prints every rank's completions
        return
    texts = [_labels.text_notice(p + o.text, labeler.policy) for p, o in zip(batch, outs)]
    if out_file:
        click.echo(f"wrote {_save_text(out_file, texts, lm, model_path, sp, labeler)}")
        return
    if as_json:
        rows = [{"prompt": p, "text": o.text, "prompt_tokens": o.prompt_tokens, "completion_tokens": len(o.token_ids),
                 "finish_reason": o.finish_reason,
                 "aigc": _labels.aigc_record(_labels.OutputMeta(_labels.new_produce_id("gl"), str(model_path)),
                                             labeler.policy) if labeler.policy.implicit else None}
                for p, o in zip(batch, outs)]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for i, (text, o) in enumerate(zip(texts, outs)):
        click.echo(f"--- sample {i + 1} ({o.finish_reason}) ---")
        click.echo(text)


def _save_text(out_file, texts: list[str], lm, model_path, sp: SamplingParams, labeler) -> str:
    """The completions in one file (separated by a rule), labelled (front matter) and logged in aigc-log.jsonl."""
    path = Path(out_file)
    if path.suffix.lower() not in (".md", ".txt"):
        raise GenloomError(f"--out for text is a .md or .txt file, got '{out_file}'")
    body = "\n\n---\n\n".join(texts) + "\n"
    finish = _labels.finisher(labeler, str(model_path), {k: v for k, v in vars(sp).items() if v is not None})
    atomic_write_bytes(path, finish(body.encode("utf-8"), None, path))
    return str(path)


def _sharded_text(lm, batch: list[str], sp: SamplingParams, marks: watermarks.Watermarks):
    """The completions of the batch; under torchrun each rank decodes a block of rows (row i seeded seed + i as in
    one process) and rank 0 gets them all in order (None on the other ranks)."""
    if distributed.world() == 1:
        return generate_text(lm.model, lm.tokenizer, batch, sp, marks.processors(lm.config.vocab_size))
    if sp.seed is None:
        sp.seed = distributed.broadcast_object(int(torch.randint(0, 2**62, (1,))))
    mine = distributed.shard(len(batch))
    outs = generate_text(lm.model, lm.tokenizer, batch[mine.start: mine.stop], replace(sp, seed=sp.seed + mine.start),
                         marks.processors(lm.config.vocab_size)) if len(mine) else []
    parts = distributed.gather_objects(outs)
    return [o for part in parts for o in part] if parts is not None else None
