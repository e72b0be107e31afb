"""POST /v1/images/generations (OpenAI's shape, plus genloom's seed/sampler/steps/guidance/label) and image files."""

from __future__ import annotations

import asyncio
import base64
import time

import torch
from fastapi import APIRouter, Request
from fastapi.responses import Response

from genloom.data.images import png_with_metadata
from genloom.diffusion import SAMPLERS
from genloom.files import atomic_write_bytes
from genloom.sample import image_classes
from genloom.serve.errors import ApiError
from genloom.serve.models import image_model
from genloom.serve.protocol import ImageData, ImageRequest, ImagesResponse, new_id
from genloom.serve.routes.deps import v1

router = APIRouter()


@router.post("/v1/images/generations", dependencies=v1)
async def generate(body: ImageRequest, request: Request) -> ImagesResponse:
    served = image_model(request.app.state, body.model)
    db = request.app.state.db
    size = f"{served.loaded.config.image_size}x{served.loaded.config.image_size}"
    limits = request.app.state.limits
    if body.n > limits.max_n:
        raise ApiError(400, f"n must be at most {limits.max_n} (got {body.n}).", param="n")
    if body.size not in (None, size):
        raise ApiError(400, f"size {body.size} is not available for `{body.model}`; it makes {size} images.",
                       param="size")
    if body.response_format == "url" and db is None:
        raise ApiError(400, "response_format url needs a server with a data directory; use b64_json.",
                       param="response_format")
    seed = body.seed if body.seed is not None else int(time.time_ns() % (2**31 - 1))
    t0 = time.perf_counter()
    images, params = await asyncio.to_thread(sample_images, served, body, seed)
    params = {"model": served.name, "family": served.loaded.family, "seed": seed, "n": body.n, "size": size, **params}
    pngs = [png_with_metadata(img, {**params, "index": i}) for i, img in enumerate(images)]
    data, ids = [], []
    for png in pngs:
        if body.response_format == "b64_json":
            data.append(ImageData(b64_json=base64.b64encode(png).decode()))
        if db is not None:
            iid = new_id("img")
            atomic_write_bytes(db.data_dir / "images" / f"{iid}.png", png)
            ids.append(iid)
            if body.response_format == "url":
                data.append(ImageData(url=str(request.url_for("image_file", image_id=iid))))
    if db is not None:
        await asyncio.to_thread(db.log_request, route="/v1/images/generations", model=served.name,
                                params=body.model_dump(exclude_none=True) | {"seed": seed},
                                output={"images": ids}, key_id=getattr(request.state, "key_id", None),
                                images=len(pngs), latency_ms=round(1000 * (time.perf_counter() - t0)))
    request.app.state.metrics.images.labels(served.name).inc(len(pngs))
    return ImagesResponse(data=data)


def sample_images(served, body: ImageRequest, seed: int) -> tuple[torch.Tensor, dict]:
    """The request's options checked against the model, then its images (N, C, H, W) uint8 and their parameters.

    Runs in a worker thread; the model's lock keeps one sampling call at a time per model.
    """
    if served.loaded.family == "diffusion":
        opts, params = _diffusion_options(body, served)
    else:
        opts, params = _one_pass_options(body, served)
    with served.loaded.lock:
        return served.loaded.model.sample(body.n, seed=seed, **opts), params


def _diffusion_options(body: ImageRequest, served) -> tuple[dict, dict]:
    """Sampler, steps, guidance and class label for a diffusion model, checked; the label may come from the prompt."""
    cfg = served.loaded.config
    sampler = body.sampler or "ddim"
    if sampler not in SAMPLERS:
        raise ApiError(400, f"Unknown sampler '{sampler}'; choose one of {', '.join(sorted(SAMPLERS))}.", param="sampler")
    steps = body.steps or 50
    if steps > cfg.num_train_timesteps:
        raise ApiError(400, f"steps must be at most {cfg.num_train_timesteps}.", param="steps")
    classes = _classes(served)
    if cfg.cond_dim:  # text-conditional: the prompt is the condition (none: unconditional)
        if body.label is not None:
            raise ApiError(400, f"`{body.model}` is text-conditional: describe the image in the prompt.", param="label")
        label = None
    else:
        label = _label(body, served, classes)
    guidance = 1.0 if body.guidance is None else body.guidance
    if guidance != 1.0 and label is None and not (cfg.cond_dim and body.prompt):
        raise ApiError(400, "guidance needs a condition: a class label or prompt (this model: "
                       + ("a prompt" if cfg.cond_dim else "a class label or a class named in the prompt"
                          if cfg.num_classes else "none, it is unconditional") + ").", param="guidance")
    opts = {"sampler": sampler, "steps": steps, "guidance": guidance}
    params = dict(opts)
    if cfg.cond_dim and body.prompt:
        opts["prompts"] = [body.prompt] * body.n
        params["prompt"] = body.prompt
    _with_label(opts, params, label, classes, body.n)
    return opts, params


def _with_label(opts: dict, params: dict, label: int | None, classes: list[str], n: int) -> None:
    """The class label as sample() takes it, and as the PNG parameters record it (index and name)."""
    if label is not None:
        opts["labels"] = torch.full((n,), label, dtype=torch.long)
        params["label"] = label
        if classes:
            params["prompt"] = classes[label]


def _classes(served) -> list[str]:
    return image_classes(served.loaded)[1]


def _num_classes(served) -> int:
    return image_classes(served.loaded)[0]


def _label(body: ImageRequest, served, classes: list[str]) -> int | None:
    """The class index from `label`, or the first class named in the prompt; checked against the model."""
    k = _num_classes(served)
    label = body.label
    if body.prompt and label is None:
        if not k:
            raise ApiError(400, f"`{body.model}` is unconditional: it takes no prompt.", param="prompt")
        named = [i for i, c in enumerate(classes) if c.lower() in body.prompt.lower()]
        if not named:
            raise ApiError(400, f"`{body.model}` draws one of its classes; name one in the prompt: "
                           f"{', '.join(classes)}.", param="prompt")
        label = named[0]
    if label is not None and not 0 <= label < k:
        if not k:
            raise ApiError(400, f"`{body.model}` is unconditional: it takes no class label.", param="label")
        raise ApiError(400, f"label must be a class index in 0..{k - 1}"
                       + (f" ({', '.join(classes)})" if classes else "") + ".", param="label")
    return label


def _one_pass_options(body: ImageRequest, served) -> tuple[dict, dict]:
    """A GAN, VAE or VQ-VAE (+ prior): no sampler, steps or guidance; a class label for a conditional one."""
    family = served.loaded.family
    if body.sampler not in (None, "gan", family) or body.steps not in (None, 1):
        raise ApiError(400, f"a {family} model has no diffusion sampler or steps.",
                       param="sampler" if body.sampler not in (None, "gan", family) else "steps")
    if body.guidance is not None:
        raise ApiError(400, f"guidance is for diffusion models; `{body.model}` is a {family} model.", param="guidance")
    classes = _classes(served)
    label = _label(body, served, classes)
    if label is None and _num_classes(served):
        raise ApiError(400, f"`{body.model}` is class-conditional: set label or name a class in the prompt: "
                       f"{', '.join(classes)}.", param="label")
    opts, params = {}, {"sampler": {"dcgan": "gan", "vqvae": "gpt-prior"}.get(family, family), "steps": 1}
    _with_label(opts, params, label, classes, body.n)
    return opts, params


@router.get("/v1/images/{image_id}.png", name="image_file", dependencies=v1)
async def image_file(image_id: str, request: Request):
    db = request.app.state.db
    if db is None or not image_id.replace("-", "").isalnum():
        raise ApiError(404, f"No such image: '{image_id}'.", code="not_found")
    path = (db.data_dir / "images" / f"{image_id}.png").resolve()
    if path.parent != (db.data_dir / "images").resolve() or not path.is_file():
        raise ApiError(404, f"No such image: '{image_id}'.", code="not_found")
    return Response(path.read_bytes(), media_type="image/png")
