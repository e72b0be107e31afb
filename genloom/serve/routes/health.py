"""GET /health (no key needed: load balancers ask it) and GET /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from genloom.serve.routes.deps import v1

router = APIRouter()


@router.get("/health", responses={503: {"description": "Some model is still loading or failed to load",
                                         "content": {"application/json": {"schema": {"type": "object"}}}}})
async def health(request: Request):
    """200 once every model given at startup is loaded; 503 while some load (the loaded ones already serve)."""
    state = request.app.state
    body = {"status": "ok", "models": sorted(state.models)}
    if state.loading:
        return JSONResponse({**body, "status": "loading", "loading": sorted(state.loading)}, status_code=503)
    if state.load_errors:
        return JSONResponse({**body, "status": "degraded", "errors": state.load_errors}, status_code=503)
    return body


@router.get("/metrics", dependencies=v1, response_class=Response,
            responses={200: {"description": "Prometheus metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(request: Request) -> Response:
    state = request.app.state
    return Response(state.metrics.render(state.models, state.db), media_type=CONTENT_TYPE_LATEST)
