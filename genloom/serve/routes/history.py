"""GET /ui/api/history: the requests served and their outputs, newest first (the web UI's History tab)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from genloom.serve.protocol import HistoryItem, HistoryList
from genloom.serve.routes.deps import require_db, v1

router = APIRouter()


@router.get("/ui/api/history", dependencies=v1)
async def history(request: Request, limit: int = 50) -> HistoryList:
    db = require_db(request)
    rows = await asyncio.to_thread(db.history, max(1, min(limit, 500)))
    return HistoryList(data=[
        HistoryItem(id=r.id, route=r.route, model=r.model, params=r.params, output=r.output,
                    usage={"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens},
                    latency_ms=r.latency_ms, created_at=r.created_at.isoformat(timespec="seconds"))
        for r in rows])
