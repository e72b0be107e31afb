"""The `genloom` command group every command module adds itself to."""

from __future__ import annotations


import click
import torch



def _threads(n: int) -> None:
    if n:
        torch.set_num_threads(n)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="genloom")
def cli():
    """genloom: train, sample, evaluate and serve generative models on your own machine."""
