"""Pipelines: a loaded model plus options in, files out (images, code records), shared by the CLI, the API and evaluation."""

from genloom.pipelines import voice  # noqa: F401 (registers genloom-trained voices in pipelines.speech.LOADERS)
