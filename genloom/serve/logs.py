"""The server's structured log: one JSON object per line, easy to grep and to ship to a log store."""

from __future__ import annotations

import json
import logging

log = logging.getLogger("genloom.serve")


def log_event(event: str, **fields) -> None:
    log.info(json.dumps({"event": event, **fields}, ensure_ascii=False, default=str))


def log_exception(event: str, **fields) -> None:
    """An event at ERROR level with the exception being handled, its traceback after the JSON line."""
    log.exception(json.dumps({"event": event, **fields}, ensure_ascii=False, default=str))
