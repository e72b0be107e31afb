"""Metrics as pure functions, each returning its figure together with the protocol that produced it."""
