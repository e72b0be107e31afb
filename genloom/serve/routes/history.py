"""GET /ui/api/history: the requests served and their outputs, newest first (the web UI's History tab)."""

from __future__ import annotations

import asyncio
import math

from fastapi import APIRouter, Request

from genloom.serve.protocol import HistoryItem, HistoryList
from genloom.serve.routes.deps import require_db, v1

router = APIRouter()


@router.get("/ui/api/history", dependencies=v1)
async def history(request: Request, limit: int = 50) -> HistoryList:
    db = require_db(request)
    rows = await asyncio.to_thread(db.history, max(1, min(limit, 500)))
    return HistoryList(data=[
        HistoryItem(id=r.id, route=r.route, model=r.model, params=_json_dict(r.params), output=_json_dict(r.output),
                    usage={"prompt_tokens": r.prompt_tokens or 0, "completion_tokens": r.completion_tokens or 0},
                    latency_ms=r.latency_ms or 0,
                    created_at=r.created_at.isoformat(timespec="seconds") if r.created_at else "")
        for r in rows])


def _json_dict(value) -> dict:
    """A stored value as JSON can carry it: NaN and infinities (stored by older servers) as null, unpaired
    surrogates replaced, anything but an object wrapped in one; so one odd row never fails the whole page."""
    value = _json_safe(value)
    return value if isinstance(value, dict) else {} if value is None else {"value": value}


def _json_safe(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, str):
        return v.encode("utf-8", "replace").decode("utf-8")
    if isinstance(v, dict):
        return {_json_safe(str(k)): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v
