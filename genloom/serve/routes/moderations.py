"""POST /v1/moderations in omni-moderation's shape: text (English, Chinese) and images (data URLs or uploaded files)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from contextlib import asynccontextmanager

from fastapi import APIRouter, Request

from genloom.errors import GenloomError
from genloom.safety.moderation import FIRST, MAX_INPUTS, moderate, moderate_parts, resolve, text_moderator, unavailable
from genloom.serve.errors import ApiError
from genloom.serve.logs import log_event
from genloom.serve.protocol import ModerationRequest, ModerationResponse, new_id
from genloom.serve.routes.deps import v1


@asynccontextmanager
async def lifespan(app):
    """Load the classifiers at start-up in a thread (as the models load): a missing one is logged now."""
    check = asyncio.create_task(asyncio.to_thread(_check))
    try:
        yield
    finally:
        await asyncio.gather(check, return_exceptions=True)


def _check() -> None:
    missing = unavailable()  # the first version's classifier: a failed import logs its own warning
    if missing:
        log_event("moderation_degraded", model=FIRST, unavailable=missing)
    try:
        text_moderator()
    except GenloomError as e:
        log_event("moderation_unavailable", error=str(e))


router = APIRouter(lifespan=lifespan)


def _image_bytes(url: str, request: Request, param: str) -> bytes:
    """A data: URL's bytes or an uploaded file's; anything else is a 400 (the server fetches nothing)."""
    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        if ";base64" not in head:
            raise ApiError(400, "An image data URL must be base64-encoded (data:image/png;base64,...).", param=param)
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "The image data URL is not valid base64.", param=param) from None
    db = request.app.state.db
    rec = db.get_file(url) if db is not None and url.startswith("file-") else None
    if rec is None:
        raise ApiError(400, f"image_url.url must be a data URL or the id of an uploaded file (got '{url[:60]}'); "
                       "this server fetches no remote URLs.", param=param)
    return db.file_path(rec).read_bytes()


@router.post("/v1/moderations", dependencies=v1)
async def moderations(body: ModerationRequest, request: Request) -> ModerationResponse:
    try:
        model = resolve(body.model)
    except GenloomError as e:
        raise ApiError(404, f"{e}.", param="model", code="model_not_found") from None
    inp = [body.input] if isinstance(body.input, str) else body.input
    if len(inp) > MAX_INPUTS:
        raise ApiError(400, f"At most {MAX_INPUTS} inputs per request (got {len(inp)}).", param="input")
    try:
        if all(isinstance(x, str) for x in inp):
            results = await asyncio.to_thread(moderate, inp, model)
        else:
            texts, images = [], []
            for i, part in enumerate(inp):
                if part.type == "text":
                    if part.text is None:
                        raise ApiError(400, "A text part needs 'text'.", param=f"input[{i}].text")
                    texts.append(part.text)
                else:
                    if part.image_url is None:
                        raise ApiError(400, "An image_url part needs 'image_url'.", param=f"input[{i}].image_url")
                    images.append(_image_bytes(part.image_url.url, request, f"input[{i}].image_url.url"))
            results = [await asyncio.to_thread(moderate_parts, texts, images, model)]
    except GenloomError as e:
        raise ApiError(400, f"{str(e)[0].upper()}{str(e)[1:]}.", param="input") from None
    return ModerationResponse(id=new_id("modr"), model=model, results=results)
