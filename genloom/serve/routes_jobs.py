"""Routes around storage: files, fine-tuning jobs (OpenAI's shapes), embeddings, history, and the web UI."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Depends, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from genloom.serve.app import ApiError, check_api_key

router = APIRouter()
v1 = [Depends(check_api_key)]
UI_DIR = Path(__file__).parent / "ui"
TEXT_SUFFIXES = {".txt", ".jsonl", ".md", ".text"}


def _store(request: Request):
    store = request.app.state.store
    if store is None:
        raise ApiError(404, "This server keeps no storage: start it with a data directory (genloom serve "
                       "--data-dir DIR) for files, jobs and history.", code="storage_disabled")
    return store


def _ts(d) -> int | None:
    return int(d.replace(tzinfo=None).timestamp()) if d else None


# ---- files ----


def _file_obj(rec) -> dict:
    return {"id": rec.id, "object": "file", "bytes": rec.bytes, "created_at": _ts(rec.created_at),
            "filename": rec.filename, "purpose": rec.purpose}


@router.post("/v1/files", dependencies=v1)
async def upload_file(request: Request, file: UploadFile, purpose: str = "fine-tune"):
    """Upload a training corpus (UTF-8 text or JSONL with a "text" field)."""
    store = _store(request)
    if purpose != "fine-tune":
        raise ApiError(400, f"Unsupported purpose '{purpose}'; choose one of fine-tune.", param="purpose")
    name = Path(file.filename or "upload.txt").name
    if Path(name).suffix.lower() not in TEXT_SUFFIXES:
        raise ApiError(400, f"Unsupported file type '{Path(name).suffix or name}'; upload one of "
                       f"{', '.join(sorted(TEXT_SUFFIXES))} (UTF-8 text).", param="file")
    limit = request.app.state.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"File is larger than the upload limit of {limit} bytes.", param="file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "File is not UTF-8 text.", param="file") from None
    if not text.strip():
        raise ApiError(400, "File is empty.", param="file")
    rec = await asyncio.to_thread(store.add_file, name, data, purpose)
    return _file_obj(rec)


@router.get("/v1/files", dependencies=v1)
async def list_files(request: Request):
    store = _store(request)
    from sqlalchemy import select

    from genloom.serve.database import File

    with store.session() as s:
        rows = list(s.scalars(select(File).order_by(File.created_at.desc()).limit(100)))
    return {"object": "list", "data": [_file_obj(r) for r in rows]}


@router.get("/v1/files/{file_id}", dependencies=v1)
async def get_file(file_id: str, request: Request):
    rec = _store(request).get_file(file_id)
    if rec is None:
        raise ApiError(404, f"No such file: '{file_id}'.", param="file_id", code="file_not_found")
    return _file_obj(rec)


# ---- fine-tuning jobs ----


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict | None = None  # n_epochs is not used: genloom trains by steps (genloom_config)
    suffix: str | None = None
    seed: int | None = None
    genloom_config: dict = Field(default_factory=dict)  # run-config overrides: {"train": {"max_steps": 50}, ...}


def _job_obj(job, events=None) -> dict:
    out = {"id": job.id, "object": "fine_tuning.job", "model": job.model, "status": job.status,
           "created_at": _ts(job.created_at), "finished_at": _ts(job.finished_at),
           "fine_tuned_model": job.fine_tuned_model, "training_file": job.training_file,
           "hyperparameters": job.config.get("train", {}), "error": {"message": job.error} if job.error else None}
    if events:
        last = next((e for e in reversed(events) if "loss" in (e.data or {})), None)
        if last:
            out["genloom_progress"] = f"step {last.data['step']}/{last.data['total_steps']}, loss {last.data['loss']:.4f}"
    return out


@router.post("/v1/fine_tuning/jobs", dependencies=v1)
async def create_job(body: JobRequest, request: Request):
    store = _store(request)
    if body.model not in request.app.state.models:
        raise ApiError(404, f"The model '{body.model}' does not exist; choose one of "
                       f"{', '.join(sorted(request.app.state.models))}.", param="model", code="model_not_found")
    if store.get_file(body.training_file) is None:
        raise ApiError(400, f"No such file: '{body.training_file}'.", param="training_file")
    from genloom.config import RunConfig, from_dict

    allowed = {k: v for k, v in body.genloom_config.items() if k in ("train", "model")}
    unknown = sorted(set(body.genloom_config) - set(allowed))
    if unknown:
        raise ApiError(400, f"genloom_config may set 'train' and 'model' keys, not {unknown}.", param="genloom_config")
    try:
        from_dict(RunConfig, {"train": allowed.get("train", {})})
    except Exception as e:  # noqa: BLE001 - the GenloomError names the bad key
        raise ApiError(400, str(e), param="genloom_config") from None
    job = await asyncio.to_thread(store.create_job, body.model, allowed, body.training_file)
    return _job_obj(job)


@router.get("/v1/fine_tuning/jobs", dependencies=v1)
async def list_jobs(request: Request, limit: int = 20):
    store = _store(request)
    jobs = await asyncio.to_thread(store.list_jobs, max(1, min(limit, 100)))
    return {"object": "list", "data": [_job_obj(j, store.events(j.id, limit=1000)) for j in jobs],
            "has_more": False}


def _job_or_404(store, job_id: str):
    job = store.get_job(job_id)
    if job is None:
        raise ApiError(404, f"No such fine-tuning job: '{job_id}'.", param="fine_tuning_job_id", code="job_not_found")
    return job


@router.get("/v1/fine_tuning/jobs/{job_id}", dependencies=v1)
async def get_job(job_id: str, request: Request):
    store = _store(request)
    return _job_obj(_job_or_404(store, job_id), store.events(job_id, limit=1000))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel", dependencies=v1)
async def cancel_job(job_id: str, request: Request):
    store = _store(request)
    job = _job_or_404(store, job_id)
    if job.status in ("succeeded", "failed", "cancelled"):
        raise ApiError(400, f"Job {job_id} has already {job.status}.", param="fine_tuning_job_id")
    job = store.set_job(job_id, "cancelled")
    store.add_event(job_id, "cancel requested")
    return _job_obj(job)


@router.get("/v1/fine_tuning/jobs/{job_id}/events", dependencies=v1)
async def job_events(job_id: str, request: Request, limit: int = 20, after: str | None = None):
    store = _store(request)
    _job_or_404(store, job_id)
    start = int(after.rsplit("-", 1)[-1]) if after and after.rsplit("-", 1)[-1].isdigit() else 0
    events = store.events(job_id, after=start, limit=max(1, min(limit, 1000)))
    data = [{"id": f"ftevent-{e.id}", "object": "fine_tuning.job.event", "created_at": _ts(e.created_at),
             "level": e.level, "message": e.message, "data": e.data, "type": "metrics" if "loss" in e.data else "message"}
            for e in events]
    return {"object": "list", "data": data, "has_more": len(events) == limit}


# ---- embeddings ----


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = "all-MiniLM-L6-v2"
    input: str | list[str]
    encoding_format: str = "float"
    user: str | None = None
    dimensions: int | None = None


@router.post("/v1/embeddings", dependencies=v1)
async def embeddings(body: EmbeddingRequest):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), computed offline."""
    from genloom.embeddings import embed

    if body.model not in ("all-MiniLM-L6-v2", "text-embedding-minilm"):
        raise ApiError(404, f"The embedding model '{body.model}' does not exist; choose all-MiniLM-L6-v2.",
                       param="model", code="model_not_found")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or any(not t for t in texts):
        raise ApiError(400, "input must be a non-empty string or a list of non-empty strings.", param="input")
    if body.encoding_format not in ("float", "base64"):
        raise ApiError(400, "encoding_format must be 'float' or 'base64'.", param="encoding_format")
    if body.dimensions not in (None, 384):
        raise ApiError(400, "all-MiniLM-L6-v2 has 384 dimensions.", param="dimensions")
    vecs = await asyncio.to_thread(embed, texts)
    tokens = sum(len(t.split()) for t in texts)
    return {"object": "list", "model": "all-MiniLM-L6-v2",
            "data": [{"object": "embedding", "index": i, "embedding": _encode_vector(v, body.encoding_format)}
                     for i, v in enumerate(vecs)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _encode_vector(v, fmt: str):
    """float: a JSON list; base64: little-endian float32 bytes (what the openai client asks for and decodes)."""
    import base64

    import numpy as np

    return v.tolist() if fmt == "float" else base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()


# ---- moderations ----


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str | list[str]
    model: str = "genloom-moderation-1"


@router.post("/v1/moderations", dependencies=v1)
async def moderations(body: ModerationRequest):
    """A first version: offensive-language classifier + keyword lexicons (genloom.safety.moderation)."""
    from genloom.safety.moderation import MODEL, moderate

    if body.model not in (MODEL, "omni-moderation-latest", "text-moderation-latest"):
        raise ApiError(404, f"The moderation model '{body.model}' does not exist; choose {MODEL}.", param="model",
                       code="model_not_found")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise ApiError(400, "input must be a string or a non-empty list of strings.", param="input")
    results = await asyncio.to_thread(moderate, texts)
    from genloom.serve.protocol import new_id

    return {"id": new_id("modr"), "model": MODEL, "results": results}


# ---- history and the web UI ----


@router.get("/ui/api/history", dependencies=v1)
async def history(request: Request, limit: int = 50):
    store = _store(request)
    rows = await asyncio.to_thread(store.history, max(1, min(limit, 500)))
    return {"data": [{"id": r.id, "route": r.route, "model": r.model, "params": r.params, "output": r.output,
                      "usage": {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens},
                      "latency_ms": r.latency_ms, "created_at": r.created_at.isoformat(timespec="seconds")}
                     for r in rows]}


@router.get("/", include_in_schema=False)
async def root():
    return RedirectResponse("/ui/")


@router.get("/ui/", include_in_schema=False)
async def ui_index():
    return FileResponse(UI_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/ui/{name}", include_in_schema=False)
async def ui_asset(name: str):
    path = (UI_DIR / name).resolve()
    if path.parent != UI_DIR.resolve() or not path.is_file():  # never outside the UI folder
        raise ApiError(404, f"No such page: /ui/{name}", code="not_found")
    return FileResponse(path, headers={"Cache-Control": "no-cache"})
