"""Pipelines: a loaded model plus options in, files out (images, code records), shared by the CLI, the API and evaluation."""
