"""POST /v1/images/generations (OpenAI's shape, plus genloom's seed/sampler/steps/guidance/label) and image files."""

from __future__ import annotations

import asyncio
import base64
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from genloom.files import atomic_write_bytes
from genloom.pipelines import images
from genloom.serve.errors import ApiError
from genloom.serve.models import image_model
from genloom.serve.protocol import ImageData, ImageRequest, ImagesResponse, new_id
from genloom.serve.routes.deps import public_url, v1

router = APIRouter()


@router.post("/v1/images/generations", dependencies=v1)
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
    result = images.ImageResult(plan, pixels)
    pngs = result.pngs()
    data, ids = [], []
    for png, revised in zip(pngs, result.revised_prompts):
        if body.response_format == "b64_json":
            data.append(ImageData(b64_json=base64.b64encode(png).decode(), revised_prompt=revised))
        if db is not None:
            iid = new_id("img")
            atomic_write_bytes(db.data_dir / "images" / f"{iid}.png", png)
            ids.append(iid)
            if body.response_format == "url":
                url = public_url(request, request.app.url_path_for("image_file", image_id=iid))
                data.append(ImageData(url=url, revised_prompt=revised))
    if db is not None:
        await asyncio.to_thread(db.log_request, route="/v1/images/generations", model=served.name,
                                params=body.model_dump(exclude_none=True) | {"seed": seed},
                                output={"images": ids}, key_id=getattr(request.state, "key_id", None),
                                images=len(pngs), latency_ms=round(1000 * (time.perf_counter() - t0)))
    request.app.state.metrics.images.labels(served.name).inc(len(pngs))
    return ImagesResponse(data=data)


@router.get("/v1/images/{image_id}.png", name="image_file", dependencies=v1)
async def image_file(image_id: str, request: Request):
    db = request.app.state.db
    if db is None or not image_id.replace("-", "").isalnum():
        raise ApiError(404, f"No such image: '{image_id}'.", code="not_found")
    path = (db.data_dir / "images" / f"{image_id}.png").resolve()
    if path.parent != (db.data_dir / "images").resolve() or not path.is_file():
        raise ApiError(404, f"No such image: '{image_id}'.", code="not_found")
    return Response(path.read_bytes(), media_type="image/png")
