"""POST/GET /v1/files: training corpora (UTF-8 text or JSONL) kept under the data directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Request, UploadFile
from sqlalchemy import select

from genloom.serve.database import File
from genloom.serve.errors import ApiError
from genloom.serve.protocol import FileList, FileObject
from genloom.serve.routes.deps import require_db, timestamp, v1

router = APIRouter()
TEXT_SUFFIXES = {".txt", ".jsonl", ".md", ".text"}


def file_object(rec) -> FileObject:
    return FileObject(id=rec.id, bytes=rec.bytes, created_at=timestamp(rec.created_at), filename=rec.filename,
                      purpose=rec.purpose)


@router.post("/v1/files", dependencies=v1)
async def upload_file(request: Request, file: UploadFile, purpose: str = "fine-tune") -> FileObject:
    """Upload a training corpus (UTF-8 text or JSONL with a "text" field)."""
    db = require_db(request)
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
    return file_object(await asyncio.to_thread(db.add_file, name, data, purpose))


@router.get("/v1/files", dependencies=v1)
async def list_files(request: Request) -> FileList:
    db = require_db(request)
    with db.session() as s:
        rows = list(s.scalars(select(File).order_by(File.created_at.desc()).limit(100)))
    return FileList(data=[file_object(r) for r in rows])


@router.get("/v1/files/{file_id}", dependencies=v1)
async def get_file(file_id: str, request: Request) -> FileObject:
    rec = require_db(request).get_file(file_id)
    if rec is None:
        raise ApiError(404, f"No such file: '{file_id}'.", param="file_id", code="file_not_found")
    return file_object(rec)
