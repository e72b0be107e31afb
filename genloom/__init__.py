"""genloom: a local-first workbench for generative models (text, images, sound)."""

__version__ = "0.1.0"
