"""`genloom moderate`: texts and images through the moderation classifiers, one JSON result each."""

from __future__ import annotations

import json
from pathlib import Path

import click

from genloom.cli.base import cli
from genloom.errors import GenloomError
from genloom.safety.moderation import MODEL, moderate, moderate_parts, resolve


@cli.command("moderate")
@click.argument("texts", nargs=-1)
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False), help="An image to check (NudeNet, "
              "sexual); repeat. With texts, one result for them all (omni-moderation's multi-modal input).")
@click.option("--model", default=MODEL, show_default=True, help="genloom-moderation-2, or genloom-moderation-1 (the first version).")
def moderate_cmd(texts, images, model):
    """Moderate TEXTS (English or Chinese) and --image files: flagged, categories, scores, as JSON lines."""
    resolve(model)  # an unknown model: one line, before anything loads
    if not texts and not images:
        raise GenloomError("nothing to moderate: give texts or --image FILE")
    if images:
        data = []
        for p in images:
            if not Path(p).is_file():
                raise GenloomError(f"image not found: {p}")
            data.append(Path(p).read_bytes())
        results = [moderate_parts(list(texts), data, model)]
    else:
        results = moderate(list(texts), model)
    for r in results:
        click.echo(json.dumps(r, ensure_ascii=False))
