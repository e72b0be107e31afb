"""`genloom provenance FILE`, `genloom signing init`, and the label switches `generate` and `serve` share."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from genloom.cli.base import cli
from genloom.errors import GenloomError
from genloom.safety import keys, labels, watermark
from genloom.safety import provenance as prov

log = logging.getLogger("genloom.safety")


def label_options(f):
    """The GB 45438 / C2PA switches (each logged when a command starts; see README "Provenance")."""
    opts = [
        click.option("--implicit-labels/--no-implicit-labels", "implicit", default=True, show_default=True,
                     help="The AIGC metadata label (XMP, ID3, Vorbis comment, MIDI text, front matter)."),
        click.option("--visible-mark/--no-visible-mark", default=True, show_default=True,
                     help="Images: the visible 'AI生成' mark GB 45438-2025 asks for."),
        click.option("--mark-text", default=labels.LabelPolicy.mark_text, show_default=True),
        click.option("--mark-position", type=click.Choice(labels.POSITIONS), default="bottom-right",
                     show_default=True),
        click.option("--text-notice/--no-text-notice", default=False, show_default=True,
                     help="Text: an 'AI生成 / AI-generated' notice line before the text."),
        click.option("--audio-cue/--no-audio-cue", default=False, show_default=True,
                     help="Audio: a short two-tone cue before the sound."),
        click.option("--c2pa", "c2pa_mode", type=click.Choice(labels.C2PA_MODES), default="auto", show_default=True,
                     help="C2PA manifests: auto signs when the data directory has a signing key."),
        click.option("--c2pa-cert", default=None, help="A PEM certificate chain (leaf first) to sign with."),
        click.option("--c2pa-key", default=None, help="The PEM private key of --c2pa-cert."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def labeler_from_options(data_dir, *, implicit, visible_mark, mark_text, mark_position, text_notice, audio_cue,
                         c2pa_mode, c2pa_cert, c2pa_key) -> labels.Labeler:
    policy = labels.LabelPolicy(implicit=implicit, visible_mark=visible_mark, mark_text=mark_text,
                                mark_position=mark_position, text_notice=text_notice, audio_cue=audio_cue,
                                c2pa=c2pa_mode)
    if (c2pa_mode == "auto" and not (c2pa_cert or c2pa_key) and data_dir is not None
            and keys.ensure_keys(data_dir)):  # the installation's own chain, made on first use (as the watermark key)
        log.info("created the installation's C2PA signing chain in %s (trust anchor %s)", keys.keys_dir(data_dir),
                 keys.ROOT_NAME)
    return labels.make_labeler(policy, data_dir, cert=c2pa_cert, key=c2pa_key)


@cli.command("provenance")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--data-dir", default="genloom-data", show_default=True,
              help="Its keys/c2pa-root.pem, when present, is the trust anchor (state Trusted rather than Valid); its "
              "watermark.key reads the invisible marks.")
def provenance_cmd(file, as_json, data_dir):
    """Every label, manifest and watermark FILE carries: GB 45438 AIGC metadata, C2PA manifest and its validation."""
    path = Path(file)
    if not path.is_file():
        raise GenloomError(f"{file}: no such file")
    root = keys.keys_dir(data_dir) / keys.ROOT_NAME
    rep = prov.report(path.read_bytes(), path.name, trust_anchor=root.read_bytes() if root.is_file() else None,
                      secret=watermark.existing_key(data_dir))
    click.echo(json.dumps(rep.to_dict(), ensure_ascii=False, indent=2) if as_json else rep.text())


@cli.group()
def signing():
    """The installation's C2PA signing certificate (a local root CA and a leaf)."""


@signing.command("init")
@click.option("--data-dir", default="genloom-data", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing key.")
def signing_init(data_dir, force):
    """Make a root CA + leaf signing certificate (ES256) in DATA_DIR/keys (key file 0600)."""
    folder = keys.init_keys(data_dir, force=force)
    click.echo(f"wrote {folder / keys.CERT_NAME} (leaf + root), {folder / keys.KEY_NAME} (0600), "
               f"{folder / keys.ROOT_NAME} (the trust anchor to give verifiers)")
