"""Pipelines: the one way from a caller's options to outputs, shared by the CLI, the API, evaluation and the UI."""
