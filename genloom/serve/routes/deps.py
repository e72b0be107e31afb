"""What the route modules share: the key check every /v1 route declares, the database, timestamps, public URLs."""

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


def public_url(request: Request, path: str) -> str:
    """An absolute URL for `path`: the configured public base URL, else the address the request came in on
    (the socket's, never the Host header, which a DNS-rebinding page or a proxy controls)."""
    base = request.app.state.public_url
    if base is None:
        host, port = request.scope.get("server") or ("127.0.0.1", 80)
        base = f"{request.scope.get('scheme', 'http')}://{f'[{host}]' if ':' in host else host}:{port}"
    return base + path
