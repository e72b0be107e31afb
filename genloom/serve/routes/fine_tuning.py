"""/v1/fine_tuning/jobs (OpenAI's shapes): create, list, get, cancel, events. A worker process trains them.

A job reads `succeeded` only once its model is served: the routes that show jobs register finished
models first (see serve.models.FineTuned).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from genloom.errors import GenloomError
from genloom.serve.errors import ApiError
from genloom.serve.jobs import JobRequestError, job_run_config
from genloom.serve.models import text_model
from genloom.serve.protocol import (
    FineTuningJob,
    FineTuningJobEvent,
    FineTuningJobEventList,
    FineTuningJobList,
    FineTuningJobRequest,
)
from genloom.serve.routes.deps import require_db, timestamp, v1

router = APIRouter()
SETTABLE = ("train", "model")  # the genloom_config sections a job may set (data comes from its file)


def job_object(job, events=()) -> FineTuningJob:
    out = FineTuningJob(id=job.id, model=job.model, status=job.status, created_at=timestamp(job.created_at),
                        finished_at=timestamp(job.finished_at), fine_tuned_model=job.fine_tuned_model,
                        training_file=job.training_file, hyperparameters=job.config.get("train", {}),
                        error={"message": job.error} if job.error else None)
    last = next((e for e in reversed(events) if "loss" in (e.data or {})), None)
    if last:
        out.genloom_progress = f"step {last.data['step']}/{last.data['total_steps']}, loss {last.data['loss']:.4f}"
    return out


async def _shown(request: Request, jobs: list) -> None:
    """Serve the models of succeeded jobs before the jobs are shown as succeeded."""
    await request.app.state.fine_tuned.register(request.app.state, jobs)


def _job_or_404(db, job_id: str):
    job = db.get_job(job_id)
    if job is None:
        raise ApiError(404, f"No such fine-tuning job: '{job_id}'.", param="fine_tuning_job_id", code="job_not_found")
    return job


@router.post("/v1/fine_tuning/jobs", dependencies=v1)
async def create_job(body: FineTuningJobRequest, request: Request) -> FineTuningJob:
    """Queue a job on a served text model and an uploaded file; its config names no path, and it stays
    within the server's job limits (400 naming the limit past them)."""
    db = require_db(request)
    base = text_model(request.app.state, body.model)
    if db.get_file(body.training_file) is None:
        raise ApiError(400, f"No such file: '{body.training_file}'.", param="training_file")
    unknown = sorted(set(body.genloom_config) - set(SETTABLE))
    if unknown:
        raise ApiError(400, f"genloom_config may set {' and '.join(map(repr, SETTABLE))} keys, not {unknown}.",
                       param="genloom_config")
    try:  # the run config the worker will build, checked now: a typo is a 400, not a failed job later
        cfg = job_run_config(body.genloom_config, data_dir="", out_dir="", init_from=body.model)
        request.app.state.job_limits.check(cfg, parameters=sum(p.numel() for p in base.loaded.model.parameters()))
    except JobRequestError as e:
        raise ApiError(400, str(e), param=e.param, code=e.code) from None
    except GenloomError as e:
        raise ApiError(400, str(e), param="genloom_config") from None
    return job_object(await asyncio.to_thread(db.create_job, body.model, body.genloom_config, body.training_file))


@router.get("/v1/fine_tuning/jobs", dependencies=v1)
async def list_jobs(request: Request, limit: int = 20) -> FineTuningJobList:
    db = require_db(request)
    jobs = await asyncio.to_thread(db.list_jobs, max(1, min(limit, 100)))
    await _shown(request, jobs)
    return FineTuningJobList(data=[job_object(j, db.events(j.id, limit=1000)) for j in jobs])


@router.get("/v1/fine_tuning/jobs/{job_id}", dependencies=v1)
async def get_job(job_id: str, request: Request) -> FineTuningJob:
    db = require_db(request)
    job = _job_or_404(db, job_id)
    await _shown(request, [job])
    return job_object(job, db.events(job_id, limit=1000))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel", dependencies=v1)
async def cancel_job(job_id: str, request: Request) -> FineTuningJob:
    """Cancel in the database: the job's worker, on any machine, stops at its next step (checkpoint kept)."""
    db = require_db(request)
    job = await asyncio.to_thread(db.cancel_job, job_id)
    if job is None:  # gone, or it ended before the cancel (maybe through another replica)
        job = _job_or_404(db, job_id)
        raise ApiError(400, f"Job {job_id} has already {job.status}.", param="fine_tuning_job_id")
    return job_object(job)


@router.get("/v1/fine_tuning/jobs/{job_id}/events", dependencies=v1)
async def job_events(job_id: str, request: Request, limit: int = 20, after: str | None = None) -> FineTuningJobEventList:
    db = require_db(request)
    await _shown(request, [_job_or_404(db, job_id)])  # "job succeeded: model registered" must hold when read
    start = int(after.rsplit("-", 1)[-1]) if after and after.rsplit("-", 1)[-1].isdigit() else 0
    events = db.events(job_id, after=start, limit=max(1, min(limit, 1000)))
    data = [FineTuningJobEvent(id=f"ftevent-{e.id}", created_at=timestamp(e.created_at), level=e.level,
                               message=e.message, data=e.data, type="metrics" if "loss" in e.data else "message")
            for e in events]
    return FineTuningJobEventList(data=data, has_more=len(events) == limit)

