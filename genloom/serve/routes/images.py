"""POST /v1/images/generations (OpenAI's shape, plus genloom's seed/sampler/steps/guidance/label) and image files."""

from __future__ import annotations

import asyncio
import base64
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from genloom.files import atomic_write_bytes
from genloom.pipelines import images
from genloom.safety import labels
from genloom.safety.policy import merge, screen, screen_images
from genloom.serve.errors import ApiError
from genloom.serve.models import image_model
from genloom.serve.openapi import responses
from genloom.serve.protocol import ImageData, ImageRequest, ImagesResponse, new_id
from genloom.serve.routes.deps import public_url, v1

router = APIRouter()


@router.post("/v1/images/generations", dependencies=v1, responses=responses(503))
async def generate(body: ImageRequest, request: Request) -> ImagesResponse:
    """The request's options resolved once by the image pipeline (as the CLI and eval do), then sampled in a
    worker thread under the model's lock; every PNG carries the pipeline's metadata."""
    served = image_model(request.app.state, body.model)
    db = request.app.state.db
    limits = request.app.state.limits
    if body.n > limits.max_n:
        raise ApiError(400, f"n must be at most {limits.max_n} (got {body.n}).", param="n")
    if body.response_format == "url" and db is None:
        raise ApiError(400, "response_format url needs a server with a data directory; use b64_json.",
                       param="response_format")
    flagged = await asyncio.to_thread(screen, request.app.state.moderation, [body.prompt or ""],
                                      route="/v1/images/generations")
    seed = body.seed if body.seed is not None else int(time.time_ns() % (2**31 - 1))
    opts = images.ImageOptions(model=served.name, n=body.n, seed=seed, sampler=body.sampler, steps=body.steps,
                               guidance=body.guidance, labels=[] if body.label is None else [body.label],
                               prompts=[body.prompt] if body.prompt else [], size=body.size)
    try:
        plan = images.resolve(served.loaded, opts)
    except images.ImageOptionError as e:
        raise ApiError(400, str(e), param=e.param) from None
    t0 = time.perf_counter()
    pixels = await asyncio.to_thread(images.sample_images, served.loaded, plan, served.loaded.lock)
    labeler = request.app.state.labeler
    result = await asyncio.to_thread(images.ImageResult, plan, pixels, request.app.state.watermarks,
                                     labels.pixel_marker(labeler))  # visible mark, then the invisible one
    ids = [new_id("img") for _ in result.params]  # each image's ProduceID, and its history/file id
    metas = [labels.OutputMeta(i, served.name, p) for i, p in zip(ids, result.params)]
    pngs = await asyncio.to_thread(lambda: [labels.label_bytes(png, "png", m, labeler, marked=True)
                                            for png, m in zip(result.pngs(), metas)])  # CPU work: off the loop
    revised = result.revised_prompts
    aigc = [labels.aigc_object(m.produce_id, m.model, m.parameters, request.app.state.labeler) for m in metas]
    flagged = merge(flagged, await asyncio.to_thread(screen_images, request.app.state.moderation, pngs,
                                                     route="/v1/images/generations"))  # NSFW check of the output
    if db is not None:
        await asyncio.to_thread(_store, db, ids, pngs, route="/v1/images/generations", model=served.name,
                                params=body.model_dump(exclude_none=True) | {"seed": seed},
                                output={"images": ids} | ({"moderation": flagged} if flagged else {}),
                                key_id=getattr(request.state, "key_id", None), images=len(pngs),
                                latency_ms=round(1000 * (time.perf_counter() - t0)))
    if body.response_format == "url":
        urls = [public_url(request, request.app.url_path_for("image_file", image_id=i)) for i in ids]
        data = [ImageData(url=u, revised_prompt=r, aigc=a) for u, r, a in zip(urls, revised, aigc)]
    else:
        data = [ImageData(b64_json=base64.b64encode(png).decode(), revised_prompt=r, aigc=a)
                for png, r, a in zip(pngs, revised, aigc)]
    request.app.state.metrics.images.labels(served.name).inc(len(pngs))
    return ImagesResponse(data=data)


def _store(db, ids: list[str], pngs: list[bytes], **row) -> None:
    """Write the PNGs and their history row; if either fails, no file is left behind without its row."""
    paths = [db.data_dir / "images" / f"{iid}.png" for iid in ids]
    try:
        for path, png in zip(paths, pngs):
            atomic_write_bytes(path, png)
        db.log_request(**row)
    except BaseException:
        for path in paths:
            path.unlink(missing_ok=True)
        raise


@router.get("/v1/images/{image_id}.png", name="image_file", dependencies=v1, response_class=Response,
            responses={200: {"description": "The PNG, with its generation parameters in its metadata",
                             "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}})
async def image_file(image_id: str, request: Request):
    db = request.app.state.db
    if db is None or not image_id.replace("-", "").isalnum():
        raise ApiError(404, f"No such image: '{image_id}'.", code="not_found")
    path = (db.data_dir / "images" / f"{image_id}.png").resolve()
    if path.parent != (db.data_dir / "images").resolve() or not path.is_file():
        raise ApiError(404, f"No such image: '{image_id}'.", code="not_found")
    return Response(path.read_bytes(), media_type="image/png")
