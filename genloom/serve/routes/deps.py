"""What the route modules share: the key check every /v1 route declares, the database, timestamps."""

from __future__ import annotations

from fastapi import Depends, Request

from genloom.serve.auth import check_api_key
from genloom.serve.errors import ApiError

v1 = [Depends(check_api_key)]


def require_db(request: Request):
    """The server's database, or a 404 that says how to start a server that keeps one."""
    db = request.app.state.db
    if db is None:
        raise ApiError(404, "This server keeps no storage: start it with a data directory (genloom serve "
                       "--data-dir DIR) for files, jobs and history.", code="storage_disabled")
    return db


def timestamp(d) -> int | None:
    """A stored naive-UTC datetime as Unix seconds, as OpenAI's objects carry them."""
    return int(d.replace(tzinfo=None).timestamp()) if d else None
