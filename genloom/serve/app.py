"""The OpenAI-compatible server's app: startup (models loaded once in the lifespan), middleware, routers, web UI.

Split like vLLM's OpenAI entrypoint: `protocol` holds the schemas, `engine` the batching and queue,
`routes` the thin endpoints per resource, `transport` the middleware (request ids, body caps, Host,
Origin and CORS checks), `models`, `auth`, `errors`, `metrics` and `logs` what they share; this module
only builds the app around them. Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from genloom import devices
from genloom.errors import GenloomError, choices
from genloom.knowledge import KnowledgeBases
from genloom.safety import labels
from genloom.safety import watermark as watermarks
from genloom.safety.policy import Policy
from genloom.safety.policy import startup as moderation_startup
from genloom.serve import openapi
from genloom.serve.auth import Auth
from genloom.serve.database import Database
from genloom.serve.errors import add_error_handlers
from genloom.serve.jobs import JobLimits, start_worker
from genloom.serve.logs import log_event
from genloom.serve.metrics import Metrics
from genloom.serve.models import FineTuned, check_engine, load_served, model_name
from genloom.serve.retrieval import KbRef, build_corpus_kb, resolve_kb, resolve_model_kb
from genloom.serve.routes import ROUTERS, transcriptions
from genloom.serve.transport import add_transport, parse_origins, parse_public_url

UI_DIR = Path(__file__).parent / "ui"
UPLOAD_FRAMING_BYTES = 64 << 10  # multipart boundaries, part headers and the purpose field around an upload
UPLOAD_PATHS = {"/v1/files", "/v1/provenance", *transcriptions.UPLOAD_PATHS}  # POST bodies capped at the upload limit, not
# the JSON one (their routes count the file itself)


@dataclass(kw_only=True)
class Limits:
    """What one request may ask for; above these the server answers 400 instead of trying."""

    max_tokens: int = 1024  # per choice
    max_n: int = 8  # choices per prompt
    max_prompts: int = 16  # prompts in one /v1/completions request
    max_stop: int = 4  # stop strings, as OpenAI
    max_body_bytes: int = 1 << 20
    retry_after_s: int = 1  # told to clients on 429


# ---- the app ----



def create_app(model_paths: list[str], *, max_batch: int = 16, max_queue: int = 64, max_tokens: int = 1024,
               max_n: int = 8, max_prompts: int = 16, max_body_bytes: int = 1 << 20, retry_after_s: int = 1,
               api_key: str | None = None, data_dir: str | None = None, db_url: str | None = None,
               jobs: bool = True, max_upload_bytes: int = 50 << 20, host: str = "127.0.0.1",
               allowed_hosts: list[str] | None = None, public_url: str | None = None,
               cors_origins: list[str] | None = None, job_limits: JobLimits | None = None,
               kb: dict[str, str] | None = None, device: str = "cpu", dtype: str = "float32",
               compile_decode: bool = False, engine: str = "thread", labeler: labels.Labeler | None = None,
               watermark: str = "on", moderation: Policy | None = None) -> FastAPI:
    """The FastAPI app serving `model_paths` (export folders, run folders or .pt files) by folder name.

    Models are loaded and their engines started in the lifespan, once; `api_key`, when given, is required
    as a Bearer token on /v1 routes and compared in constant time. With `data_dir` (or `db_url`) the
    server keeps a database: history, uploaded files, fine-tuning jobs (run by a worker process when
    `jobs`, within `job_limits`), and API keys (while one is active, every route but /health needs one;
    with none the server is open); fine-tuned models land in data_dir/models and are served before their
    job reads succeeded.

    Browser-facing: only the Host names in `allowed_hosts`, loopback and `host` (the bound address) are
    served ('*' for any); URLs the server hands out start with `public_url` (default: the address the
    request came in on, never its Host header); cross-origin requests get CORS answers only for
    `cors_origins`, and a state-changing one from any other origin is refused.

    Watermarks (genloom.safety.watermark): "on" marks every text, image and audio output with the installation's
    key (data_dir/watermark.key, made once); "off" is logged as a warning.

    Grounded chat: `kb` maps a served model's name to the knowledge base it answers from (a base's name under
    data_dir/kb or a knowledge-base folder), over the one its folder's grounding.json names (serve/retrieval.py).

    Labels: `labeler` (GB 45438 labels and C2PA signing, genloom.safety.labels) is applied to every output; the
    default labels everything and signs when data_dir/keys has the installation's key.
    """
    public_url = parse_public_url(public_url)
    origins = parse_origins(cors_origins)
    if not model_paths:
        raise GenloomError("serve needs at least one model path")
    missing = [p for p in model_paths if not Path(p).exists()]
    if missing:
        raise GenloomError(f"model not found: {', '.join(map(str, missing))}")
    names = [model_name(p) for p in model_paths]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise GenloomError(f"two models would both be called {dup}: serve folders with different names")
    if max_batch < 1 or max_queue < 0:
        raise GenloomError(f"max_batch must be >= 1 and max_queue >= 0 (got {max_batch}, {max_queue})")
    check_engine(engine)
    kbs = KnowledgeBases(Path(data_dir or "genloom-data") / "kb") if data_dir or db_url else None
    kb_refs = resolve_kbs(names, kb or {}, kbs)  # a missing base fails here, before anything loads
    marks = watermarks.load(Path(data_dir or "genloom-data"), watermark, where="genloom serve")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        log_event("auth_mode", mode=state.auth.mode(), detail=state.auth.describe())
        log_event("labels", switches=state.labeler.policy.describe(state.labeler.identity is not None),
                  warnings=state.labeler.warnings())
        moderation_startup(state.moderation)  # the policy, logged; a warning when it is off
        loader = asyncio.gather(*(_load(state, p, max_batch, max_queue, kb_refs) for p in model_paths))
        watcher = worker = None
        try:
            if state.db is not None:
                requeued = state.db.recover_jobs()
                if requeued:
                    log_event("jobs_requeued", jobs=requeued)
                if jobs:
                    bases = {model_name(p): str(Path(p).resolve()) for p in model_paths}
                    worker = start_worker(state.db, str(state.data_dir), str(state.data_dir / "models"), bases,
                                          state.job_limits)
                watcher = asyncio.create_task(_watch_jobs(state))
            yield
        finally:
            await asyncio.gather(loader, return_exceptions=True)
            if watcher is not None:
                watcher.cancel()
            if worker is not None:
                worker.terminate()
                worker.join(5)
            for served in state.models.values():
                if served.engine is not None:
                    served.engine.stop()
            state.models = {}

    app = FastAPI(title="genloom", summary="OpenAI-compatible API for genloom models", lifespan=lifespan)
    state = app.state
    state.models = {}
    state.device = devices.resolve(device)  # --device: where the models run
    state.loading, state.load_errors = set(names), {}
    state.limits = Limits(max_tokens=max_tokens, max_n=max_n, max_prompts=max_prompts,
                          max_body_bytes=max_body_bytes, retry_after_s=retry_after_s)
    state.capacity = max_batch + max_queue  # engine requests one API request may need at most
    # how text models run (genloom.models.runtime) and where their engines do (serve/models.py load_served)
    state.inference = {"dtype": dtype, "compile": compile_decode, "engine": engine}
    state.metrics = Metrics()
    state.max_upload_bytes = max_upload_bytes
    state.job_limits = job_limits or JobLimits()
    state.db = state.data_dir = state.fine_tuned = None
    state.kbs = kbs  # data_dir/kb: the vector stores, and the bases --kb and grounding.json name
    if data_dir or db_url:
        state.data_dir = Path(data_dir or "genloom-data")
        state.db = Database(db_url, data_dir=state.data_dir)
        state.fine_tuned = FineTuned(state.data_dir / "models", max_batch=max_batch, max_queue=max_queue)
    state.watermarks = marks  # every output's invisible mark, and the detect route's key
    state.auth = Auth(api_key, state.db)
    # genloom.safety.policy, applied to prompts and outputs of every route; `genloom serve` passes its policy (default
    # block); an app built in code without one runs unmoderated, with a warning at start-up
    state.moderation = moderation or Policy(mode="off", source="create_app without a policy")
    state.public_url = public_url
    state.labeler = labeler or labels.make_labeler(labels.LabelPolicy(), state.data_dir)
    add_error_handlers(app)
    upload_cap = max_upload_bytes + UPLOAD_FRAMING_BYTES  # files.py counts the file itself against its limit
    add_transport(app, host=host, allowed_hosts=allowed_hosts, public_url=public_url, cors_origins=origins,
                  body_limit=lambda scope: upload_cap if scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS
                  else max_body_bytes)
    for router in ROUTERS:
        app.include_router(router)
    openapi.install(app)  # the error answers as sent: OpenAI's error body, no 422
    app.add_api_route("/", lambda: RedirectResponse("/ui/"), include_in_schema=False)
    app.mount("/ui", NoCacheFiles(directory=UI_DIR, html=True), name="ui")
    return app


def resolve_kbs(names: list[str], kb: dict[str, str], kbs: KnowledgeBases | None) -> dict[str, KbRef]:
    """`--kb MODEL=KB` pairs as the bases they name; an unknown model or base is an error naming the choices."""
    unknown = sorted(set(kb) - set(names))
    if unknown:
        raise GenloomError(f"--kb names a model that is not served: {', '.join(unknown)}; choose one of "
                           f"{choices(names)}")
    return {m: resolve_kb(ref, kbs=kbs) for m, ref in kb.items()}


class NoCacheFiles(StaticFiles):
    """The web UI's files, revalidated on every load (a new version is seen at once); never outside the folder."""

    async def get_response(self, path, scope):
        if "\x00" in path:  # os.stat raises ValueError on a NUL: a 500 on older Starlette versions
            raise HTTPException(404)
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _load_grounded(state, path, max_batch: int, max_queue: int, kb_refs: dict[str, KbRef]):
    """load_served, then the knowledge base the model answers from: --kb's, else its grounding.json's."""
    served = load_served(path, max_batch=max_batch, max_queue=max_queue, device=state.device, **state.inference,
                         watermarks=state.watermarks)
    try:
        served.kb = kb_refs.get(served.name)
        if served.kb is None and served.kb_ref is not None:
            folder = Path(path) if Path(path).is_dir() else Path(path).parent
            served.kb = resolve_model_kb(served.kb_ref, kbs=state.kbs, base=folder)
            if served.kb is None:  # a bundled corpus not built yet: _load builds it after the model serves
                served.kb_building = served.kb_ref
        if served.kb is not None and served.engine is None:
            raise GenloomError(f"{served.name} is an image model: only a chat model can answer from a knowledge base")
    except Exception:
        if served.engine is not None:
            served.engine.stop()
        raise
    return served


async def _load(state, path, max_batch: int, max_queue: int, kb_refs: dict[str, KbRef]) -> None:
    """Load one model in a thread: requests to models already loaded go on meanwhile."""
    t0, name = time.perf_counter(), model_name(path)
    try:
        served = await asyncio.to_thread(_load_grounded, state, path, max_batch, max_queue, kb_refs)
    except Exception as e:  # noqa: BLE001 - reported by /health and the log; the others still serve
        state.load_errors[name] = str(e)
        log_event("model_load_failed", model=name, path=str(path), error=str(e))
        return
    finally:
        state.loading.discard(name)
    state.models = {**state.models, served.name: served}
    log_event("model_loaded", model=served.name, path=str(path), context=served.context,
              kb=None if served.kb is None else str(served.kb), seconds=round(time.perf_counter() - t0, 2))
    if served.kb_building is not None:
        await _build_kb(state, served)


async def _build_kb(state, served) -> None:
    """Build the bundled corpus's base a grounded model answers from, in a thread, after the model serves (and
    /health says ok): until it is ready the model's grounded requests get a 503 (routes/completions.py)."""
    t0, ref = time.perf_counter(), served.kb_building
    log_event("kb_build_started", model=served.name, kb=ref)
    try:
        served.kb = await asyncio.to_thread(build_corpus_kb, ref, state.kbs)
    except Exception as e:  # noqa: BLE001 - reported by the model's grounded requests and the log
        served.kb_error = f"{type(e).__name__}: {e}"
        log_event("kb_build_failed", model=served.name, kb=ref, error=served.kb_error)
    else:
        log_event("kb_built", model=served.name, kb=str(served.kb), seconds=round(time.perf_counter() - t0, 2))
    finally:
        served.kb_building = None


async def _watch_jobs(state) -> None:
    """Serve each fine-tuned model soon after its job succeeds, even when no one reads the job."""
    while True:
        await asyncio.sleep(1.0)
        try:
            await state.fine_tuned.register(state, await asyncio.to_thread(state.db.list_jobs, 100))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - keep watching; the job's own events say what failed
            log_event("model_register_failed", error=str(e))


def serve(model_paths: list[str], host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **kw) -> None:
    """Run the app under uvicorn (one process: the engines own the models); `kw` goes to create_app."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(message)s")
    app = create_app(model_paths, host=host, **kw)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
