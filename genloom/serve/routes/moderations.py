"""POST /v1/moderations: a first version, an offensive-language classifier plus keyword lexicons."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import APIRouter

from genloom.safety.moderation import MODEL, moderate, unavailable
from genloom.serve.errors import ApiError
from genloom.serve.logs import log_event
from genloom.serve.protocol import ModerationRequest, ModerationResponse, new_id
from genloom.serve.routes.deps import v1


@asynccontextmanager
async def lifespan(app):
    """Load the classifier at start-up in a thread (as the models load): a missing one is logged now."""
    check = asyncio.create_task(asyncio.to_thread(_check))
    try:
        yield
    finally:
        await asyncio.gather(check, return_exceptions=True)


def _check() -> None:
    missing = unavailable()  # a failed import logs its own warning on genloom.safety
    if missing:
        log_event("moderation_degraded", unavailable=missing)


router = APIRouter(lifespan=lifespan)


@router.post("/v1/moderations", dependencies=v1)
async def moderations(body: ModerationRequest) -> ModerationResponse:
    if body.model not in (MODEL, "omni-moderation-latest", "text-moderation-latest"):
        raise ApiError(404, f"The moderation model '{body.model}' does not exist; choose {MODEL}.", param="model",
                       code="model_not_found")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise ApiError(400, "input must be a string or a non-empty list of strings.", param="input")
    results = await asyncio.to_thread(moderate, texts)
    return ModerationResponse(id=new_id("modr"), model=MODEL, results=results)
