"""`genloom data`, `train`, `export`, `import-hf`, `export-hf`, `export-gguf`: from text to a trained model folder."""

from __future__ import annotations

import json
import sys

import click

from genloom import distributed, families
from genloom import train as training
from genloom.checkpoints import export_model, load_model, update_card, write_model_card
from genloom.cli.base import cli
from genloom.errors import GenloomError
from genloom.evaluate import dtype_change
from genloom.families import load_run_config
from genloom.files import disk_full_as_error
from genloom.gguf_export import DTYPES as GGUF_DTYPES
from genloom.gguf_export import export_gguf
from genloom.hf import export_gpt2, import_gpt2
from genloom.knowledge.examples import prepare


@cli.command()
@click.argument("source")
@click.option("--out", "-o", required=True, help="Folder to write train.bin, val.bin, tokenizer.json, meta.json.")
@click.option("--tokenizer", "-t", type=click.Choice(["char", "bpe", "gpt2", "remi", "tsd"]), default=None,
              help="Text: char (default), bpe, gpt2. Music: remi (default), tsd (miditok).")
@click.option("--vocab-size", type=int, default=4096, show_default=True, help="For bpe: the vocabulary to train.")
@click.option("--val-fraction", type=float, default=0.05, show_default=True)
@click.option("--seed", type=int, default=1337, show_default=True, help="Seed of the document split.")
@click.option("--text-field", default="text", show_default=True, help="JSONL field holding the text.")
@click.option("--tokenizer-from", default=None, help="Reuse the tokenizer of a model or data folder (fine-tuning).")
@click.option("--transpose", type=int, default=3, show_default=True,
              help="Music: training pieces also seen shifted -N..+N semitones (0: off; validation never).")
def data(source, out, tokenizer, vocab_size, val_fraction, seed, text_field, tokenizer_from, transpose):
    """Prepare SOURCE: text (a file, a folder, or a corpus: tang, song, poems-zh, kjv, fortunes, chatterbot,
    bible-en-es) or music (MIDI/MusicXML/ABC files, a folder of them, or a corpus: chorales, folk; NAME:N for
    its first N pieces); chatterbot-grounded / support-grounded: dialogues (and man-page questions)
    with retrieved passages in the prompt (genloom.knowledge.examples)."""
    with disk_full_as_error():
        meta = prepare(source, out, tokenizer, vocab_size, val_fraction, seed, text_field, tokenizer_from,
                       transpose)
    if meta.get("modality") == "speech":
        u, sec = meta["utterances"], meta["seconds"]
        return click.echo(f"{out}: {u['train']}+{u['val']} utterances, {sec['train']} s train / {sec['val']} s val "
                          f"of {meta['features']['n_mels']}-band log-mels with phoneme durations")
    click.echo(
        f"{out}: {meta['documents']['train']}+{meta['documents']['val']} documents, "
        f"{meta['tokens']['train']:,} train / {meta['tokens']['val']:,} val tokens, "
        f"{meta['tokenizer']} tokenizer with {meta['vocab_size']} ids"
    )


@cli.command()
@click.option("--config", "-c", "config_path", default=None, help="A TOML, YAML or JSON run config.")
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. train.lr=3e-4.")
@click.option("--resume", is_flag=True, help="Continue the run in train.out_dir from its last checkpoint.")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default: train.device, auto: a GPU "
              "when there is one). Under torchrun, cuda is each rank's LOCAL_RANK GPU.")
def train(config_path, overrides, resume, device):
    """Train a model from a config (one loop for every family; under torchrun, one process per rank)."""
    cfg = load_run_config(config_path, [*overrides, *([f"train.device={device}"] if device else [])])
    summary = training.run(cfg, resume=resume)  # a full disk: one line naming the file (GenloomError)
    summary.pop("samples", None)
    if distributed.env_rank() == 0:  # under torchrun, one summary line (rank 0's)
        click.echo(json.dumps(summary))
    if summary["stopped"] == "interrupted":
        sys.exit(130)


@cli.command()
@click.argument("run")
@click.option("--out", "-o", required=True, help="Folder for the slim safetensors export.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16", "int8"]), default="float32",
              show_default=True, help="int8: text models, per-row int8 weights with scales (run by dynamic quantisation).")
@click.option("--name", default="", help="Title of the model card (README.md) written beside the weights.")
@click.option("--command", "repro", default="", help="The command that reproduces the model, for its card.")
@click.option("--data", "data_dir", default=None, help="Text: the prepared data whose validation split measures the "
              "perplexity change of --dtype for the card (default: the run's data.dir).")
def export(run, out, dtype, name, repro, data_dir):
    """Export a run (its best weights, else its last checkpoint) or a model to a slim safetensors folder."""
    lm = load_model(run)
    text = families.get(lm.family).kind == "text"
    if dtype == "int8" and not text:
        raise GenloomError(f"--dtype int8 is for text models; {run} is a '{lm.family}' model: choose one of "
                           "float32, float16, bfloat16")
    card = dict(lm.meta.get("card", {}))
    with disk_full_as_error():
        export_model(out, family=lm.family, model=lm.model, model_config=lm.config, tokenizer=lm.tokenizer,
                     card=card, dtype=dtype)
        if text and dtype != "float32":
            data_dir = data_dir or card.get("run_config", {}).get("data", {}).get("dir")
            card["export_dtype"] = dtype_change(lm, out, dtype, data_dir)
            update_card(out, card)
        write_model_card(out, card, name, repro)
    change = card.get("export_dtype", {})
    note = f", validation perplexity {change['perplexity_float32']:.3f} -> {change['perplexity']:.3f}" \
        if change.get("perplexity") is not None else ""
    click.echo(f"exported {run} -> {out} ({dtype}{note})")


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


@cli.command("export-gguf")
@click.argument("model")
@click.option("--out", "-o", required=True, help="The GGUF file to write (an Ollama Modelfile and a card go beside it).")
@click.option("--dtype", type=click.Choice(sorted(GGUF_DTYPES)), default="f32", show_default=True,
              help="Weight type of the matrices (vectors stay f32).")
def export_gguf_cmd(model, out, dtype):
    """Export a genloom GPT model (gpt2 or llama arch) with its tokenizer as one GGUF file for llama.cpp / Ollama."""
    with disk_full_as_error():
        path, mf, card = export_gguf(model, out, dtype)
    click.echo(f"exported {model} -> {path} ({dtype}); Ollama: ollama create NAME -f {mf} (see {card})")
