"""`genloom data`, `train`, `export`, `import-hf`, `export-hf`: from text to a trained model folder."""

from __future__ import annotations

import json
import sys

import click

from genloom import train as training
from genloom.checkpoints import export_model, load_model, write_model_card
from genloom.cli.base import cli
from genloom.families import load_run_config
from genloom.files import disk_full_as_error
from genloom.hf import export_gpt2, import_gpt2
from genloom.knowledge.examples import prepare


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
    """Prepare SOURCE (a file, a folder, or a corpus: tang, song, poems-zh, kjv, fortunes, chatterbot, bible-en-es;
    chatterbot-grounded: its dialogues with retrieved passages in the prompt, genloom.knowledge.examples)."""
    with disk_full_as_error():
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
    summary = training.run(cfg, resume=resume)  # a full disk: one line naming the file (GenloomError)
    summary.pop("samples", None)
    click.echo(json.dumps(summary))
    if summary["stopped"] == "interrupted":
        sys.exit(130)


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
    with disk_full_as_error():
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
