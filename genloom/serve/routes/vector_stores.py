"""/v1/vector_stores: knowledge bases (genloom.knowledge) in OpenAI's vector-store shape.

A store is a knowledge base folder under the data directory's kb/ (its id, generated here, is the folder's
name; `genloom kb create NAME` bases there are listed too, by name). The folder's manifest is the record:
files attached, metadata, timestamps; no database table. Files come from /v1/files by id and are indexed
when attached (the request returns once the file is searchable: status "completed"). Splitting, embedding
and searching run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from fastapi import APIRouter, Request

from genloom.errors import GenloomError
from genloom.knowledge import Document, KnowledgeBases, read_file
from genloom.serve.errors import ApiError
from genloom.serve.protocol import (
    SearchContent,
    VectorStoreCreate,
    VectorStoreDeleted,
    VectorStoreFileCounts,
    VectorStoreFileCreate,
    VectorStoreFileDeleted,
    VectorStoreFileList,
    VectorStoreFileObject,
    VectorStoreList,
    VectorStoreObject,
    VectorStoreSearchPage,
    VectorStoreSearchRequest,
    VectorStoreSearchResult,
)
from genloom.serve.routes.deps import require_db, v1

router = APIRouter()
RANKERS = {"auto": "hybrid", "default-2024-11-15": "hybrid", "none": "embeddings", "hybrid": "hybrid",
           "bm25": "bm25", "embeddings": "embeddings"}


def stores(request: Request) -> KnowledgeBases:
    """The server's knowledge bases (data_dir/kb), or a 404 when it keeps no data directory."""
    require_db(request)
    kbs = getattr(request.app.state, "kbs", None)
    if kbs is None:
        kbs = request.app.state.kbs = KnowledgeBases(Path(request.app.state.data_dir) / "kb")
    return kbs


def _store(kbs: KnowledgeBases, store_id: str) -> dict:
    if not kbs.exists(store_id):
        raise ApiError(404, f"No vector store found with id '{store_id}'.", param="vector_store_id",
                       code="vector_store_not_found")
    return kbs.manifest(store_id)


def store_object(store_id: str, m: dict) -> VectorStoreObject:
    docs = m["documents"]
    return VectorStoreObject(id=store_id, created_at=m["created_at"], name=m["name"],
                             usage_bytes=sum(_bytes(d) for d in docs.values()),
                             file_counts=VectorStoreFileCounts(completed=len(docs), total=len(docs)),
                             last_active_at=m["updated_at"], metadata=m.get("meta", {}).get("metadata") or {})


def _bytes(doc: dict) -> int:
    return doc.get("meta", {}).get("bytes", doc.get("chars", 0))


def file_object(store_id: str, key: str, doc: dict) -> VectorStoreFileObject:
    return VectorStoreFileObject(id=doc.get("meta", {}).get("file_id", key), usage_bytes=_bytes(doc),
                                 created_at=doc.get("updated_at", 0), vector_store_id=store_id,
                                 attributes={"filename": doc.get("source", key), "passages": doc.get("passages", 0)})


def _documents(request: Request, file_ids: list[str], field: str) -> tuple[list[Document], dict[str, dict]]:
    """The uploaded files as documents keyed by file id (read, checked and split before anything is written)."""
    db = require_db(request)
    docs, meta = [], {}
    for i, fid in enumerate(file_ids):
        rec = db.get_file(fid)
        param = f"{field}[{i}]" if field == "file_ids" else field
        if rec is None:
            raise ApiError(404, f"No such file: '{fid}'.", param=param, code="file_not_found")
        try:
            docs.append(read_file(db.file_path(rec), fid, source=rec.filename))
        except GenloomError as e:
            raise ApiError(400, f"File '{fid}' ({rec.filename}) cannot be indexed: {e}.", param=param) from None
        meta[fid] = {"file_id": fid, "filename": rec.filename, "bytes": rec.bytes}
    return docs, meta


@router.post("/v1/vector_stores", dependencies=v1)
async def create_store(body: VectorStoreCreate, request: Request) -> VectorStoreObject:
    kbs = stores(request)
    docs, meta = await asyncio.to_thread(_documents, request, body.file_ids, "file_ids")
    store_id = f"vs_{uuid.uuid4().hex[:24]}"
    await asyncio.to_thread(kbs.update, store_id, docs, title=body.name or "", doc_meta=meta,
                            meta={"metadata": body.metadata or {}})
    return store_object(store_id, kbs.manifest(store_id))


@router.get("/v1/vector_stores", dependencies=v1)
async def list_stores(request: Request) -> VectorStoreList:
    kbs = stores(request)
    rows = sorted(((n, kbs.manifest(n)) for n in kbs.names()), key=lambda r: -r[1]["created_at"])
    data = [store_object(n, m) for n, m in rows[:100]]
    return VectorStoreList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None)


@router.get("/v1/vector_stores/{store_id}", dependencies=v1)
async def get_store(store_id: str, request: Request) -> VectorStoreObject:
    return store_object(store_id, _store(stores(request), store_id))


@router.delete("/v1/vector_stores/{store_id}", dependencies=v1)
async def delete_store(store_id: str, request: Request) -> VectorStoreDeleted:
    kbs = stores(request)
    _store(kbs, store_id)
    await asyncio.to_thread(kbs.delete, store_id)
    return VectorStoreDeleted(id=store_id)


@router.post("/v1/vector_stores/{store_id}/files", dependencies=v1)
async def attach_file(store_id: str, body: VectorStoreFileCreate, request: Request) -> VectorStoreFileObject:
    kbs = stores(request)
    _store(kbs, store_id)
    docs, meta = await asyncio.to_thread(_documents, request, [body.file_id], "file_id")
    await asyncio.to_thread(kbs.update, store_id, docs, doc_meta=meta)
    return file_object(store_id, body.file_id, kbs.manifest(store_id)["documents"][body.file_id])


@router.get("/v1/vector_stores/{store_id}/files", dependencies=v1)
async def list_store_files(store_id: str, request: Request) -> VectorStoreFileList:
    docs = _store(stores(request), store_id)["documents"]
    data = [file_object(store_id, k, d) for k, d in docs.items()]
    return VectorStoreFileList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None)


def _file_key(m: dict, store_id: str, file_id: str) -> str:
    key = next((k for k, d in m["documents"].items() if d.get("meta", {}).get("file_id", k) == file_id), None)
    if key is None:
        raise ApiError(404, f"No file '{file_id}' in vector store '{store_id}'.", param="file_id",
                       code="file_not_found")
    return key


@router.get("/v1/vector_stores/{store_id}/files/{file_id}", dependencies=v1)
async def get_store_file(store_id: str, file_id: str, request: Request) -> VectorStoreFileObject:
    m = _store(stores(request), store_id)
    key = _file_key(m, store_id, file_id)
    return file_object(store_id, key, m["documents"][key])


@router.delete("/v1/vector_stores/{store_id}/files/{file_id}", dependencies=v1)
async def detach_file(store_id: str, file_id: str, request: Request) -> VectorStoreFileDeleted:
    kbs = stores(request)
    key = _file_key(_store(kbs, store_id), store_id, file_id)
    await asyncio.to_thread(kbs.update, store_id, [], remove=[key])
    return VectorStoreFileDeleted(id=file_id)


@router.post("/v1/vector_stores/{store_id}/search", dependencies=v1)
async def search_store(store_id: str, body: VectorStoreSearchRequest, request: Request) -> VectorStoreSearchPage:
    """Hybrid search by default (BM25 + MiniLM, reciprocal rank fusion); ranking_options.ranker picks bm25 or
    embeddings alone. Each result is one passage: its file, score, heading and offsets as attributes."""
    kbs = stores(request)
    m = _store(kbs, store_id)
    queries = [body.query] if isinstance(body.query, str) else body.query
    if not queries or any(not q.strip() for q in queries):
        raise ApiError(400, "query must be a non-empty string or a list of non-empty strings.", param="query")
    if body.rewrite_query:
        raise ApiError(400, "rewrite_query is not supported: send false.", param="rewrite_query")
    opts = body.ranking_options
    mode = RANKERS[opts.ranker if opts else "auto"]
    try:
        hits = await asyncio.to_thread(kbs.search, store_id, "\n".join(queries), k=body.max_num_results, mode=mode)
    except GenloomError as e:
        raise ApiError(400, f"{e}.", param="query") from None
    threshold = opts.score_threshold if opts else 0.0
    data = []
    for h in hits:
        if h.score < threshold:
            continue
        p, doc = h.passage, m["documents"].get(h.passage.doc, {})
        attrs = {"passage_id": p.id, "start": p.start, "end": p.end}
        attrs.update({k: v for k, v in (("heading", p.heading), ("cosine", h.cosine), ("bm25", h.bm25)) if v is not None})
        data.append(VectorStoreSearchResult(file_id=doc.get("meta", {}).get("file_id", p.doc), filename=p.source,
                                            score=h.score, attributes=attrs, content=[SearchContent(text=p.text)]))
    return VectorStoreSearchPage(search_query=queries, data=data)
