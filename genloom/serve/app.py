"""The OpenAI-compatible server: startup (models loaded once in the lifespan), middleware, errors, metrics.

Split like vLLM's OpenAI entrypoint: `protocol` holds the schemas, `engine` the batching and queue,
`routes` the thin endpoints, this module the app around them. Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from genloom.errors import GenloomError, choices
from genloom.serve.protocol import ErrorInfo, ErrorResponse

log = logging.getLogger("genloom.serve")

DEFAULT_CHAT_TEMPLATE = {  # how genloom's chatterbot corpus lays out a dialogue ("User: ...\nBot: ...")
    "system": "{content}\n",
    "user": "User: {content}\n",
    "assistant": "Bot: {content}\n",
    "generation_prompt": "Bot:",
    "stop": ["\nUser:"],
}


def log_event(event: str, **fields) -> None:
    """One JSON object per line: easy to grep, easy to ship to a log store."""
    log.info(json.dumps({"event": event, **fields}, ensure_ascii=False, default=str))


# ---- errors ----


class ApiError(Exception):
    """An error with OpenAI's JSON shape {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}


def error_response(status: int, message: str, type: str = "invalid_request_error", param=None, code=None,
                   headers=None) -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


_UNION_TAG = re.compile(r"[\[\]\-, ]|^(str|int|float|bool|list|dict|none|function-.*)$")


def _param(loc) -> str | None:
    """A pydantic error location as OpenAI's param: ("body", "messages", 0, "role") -> "messages[0].role"."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _UNION_TAG.search(str(part)):  # skip pydantic's union-member tags such as 'list[str]'
            out += f".{part}" if out else str(part)
    return out or None


def _validation_message(err: dict, param: str | None) -> str:
    kind = err.get("type", "")
    if kind == "json_invalid":
        return ("We could not parse the JSON body of your request: "
                f"{err.get('ctx', {}).get('error', 'invalid JSON')}. Send a valid JSON object.")
    if kind == "missing" and param is None:
        return "The request body is missing: send a JSON object."
    if kind == "model_attributes_type" or (param is None and kind.endswith("_type")):
        return "The request body must be a JSON object, sent with Content-Type: application/json."
    if kind == "missing":
        return f"Missing required parameter: '{param}'."
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}"
    return f"Invalid value for '{param}': {err.get('msg', 'invalid')}."


async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    # a union of types reports one error per member; the first names the field well enough
    err = next((e for e in errors if e.get("type") == "json_invalid"), errors[0] if errors else {})
    param = None if err.get("type") == "json_invalid" else _param(err.get("loc", ()))
    return error_response(400, _validation_message(err, param), param=param)


async def _on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)


async def _on_genloom_error(request: Request, exc: GenloomError) -> JSONResponse:
    return error_response(400, str(exc))


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        return error_response(404, f"Unknown route: {request.method} {request.url.path}", code="not_found")
    return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(500, "The server had an error while processing your request.", "server_error")


# ---- models ----


@dataclass
class ChatTemplate:
    """Role prefixes around each message, the cue that asks the model for a reply, and its stop strings."""

    system: str
    user: str
    assistant: str
    generation_prompt: str
    stop: list[str]

    @classmethod
    def load(cls, folder: Path) -> "ChatTemplate":
        """The folder's chat_template.json over the default; unknown keys and wrong types are errors."""
        spec = dict(DEFAULT_CHAT_TEMPLATE)
        path = folder / "chat_template.json"
        if path.is_file():
            try:
                given = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise GenloomError(f"{path} is not valid JSON ({e})") from None
            if not isinstance(given, dict):
                raise GenloomError(f"{path} must hold a JSON object")
            unknown = set(given) - set(spec)
            if unknown:
                raise GenloomError(f"{path}: unknown keys {sorted(unknown)}; choose from {choices(spec)}")
            spec.update(given)
        for key in ("system", "user", "assistant", "generation_prompt"):
            if not isinstance(spec[key], str):
                raise GenloomError(f"{path}: '{key}' must be a string")
        if not isinstance(spec["stop"], list) or not all(isinstance(s, str) for s in spec["stop"]):
            raise GenloomError(f"{path}: 'stop' must be a list of strings")
        return cls(**spec)

    def render(self, messages: list[tuple[str, str]]) -> str:
        """(role, content) pairs to the prompt text, ending with the generation prompt."""
        roles = {"system": self.system, "developer": self.system, "user": self.user, "assistant": self.assistant}
        return "".join(roles[r].replace("{content}", c) for r, c in messages) + self.generation_prompt


@dataclass
class ServedModel:
    name: str
    loaded: object  # genloom.checkpoints.Loaded
    engine: object  # genloom.serve.engine.TextEngine
    template: ChatTemplate
    context: int
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def tokenizer(self):
        return self.loaded.tokenizer


def model_name(path: str | Path) -> str:
    """The name a client asks for: the model folder's name ('chat', 'kjv'); a run's name for run/best."""
    p = Path(path).resolve()
    if p.is_file():
        return p.parent.name if p.suffix == ".safetensors" else p.stem
    return p.parent.name if p.name == "best" else p.name


def load_served(path: str | Path, *, max_batch: int, max_queue: int) -> ServedModel:
    from genloom import families
    from genloom.checkpoints import load_model
    from genloom.serve.engine import TextEngine

    loaded = load_model(path)
    name = model_name(path)
    if families.get(loaded.family).kind == "image":  # sampled in a thread by the images route; no decode engine
        loaded.lock = threading.Lock()
        return ServedModel(name, loaded, None, None, 0)
    if loaded.family != "gpt" or loaded.tokenizer is None:
        raise GenloomError(f"{path} is a '{loaded.family}' model; the text API serves gpt models with a tokenizer")
    p = Path(path)
    template = ChatTemplate.load(p if p.is_dir() else p.parent)
    engine = TextEngine(loaded.model, loaded.tokenizer, max_batch=max_batch, max_queue=max_queue, name=name)
    engine.start()
    return ServedModel(name, loaded, engine, template, int(loaded.config.block_size))


# ---- limits and metrics ----


@dataclass(kw_only=True)
class Limits:
    """What one request may ask for; above these the server answers 400 instead of trying."""

    max_tokens: int = 1024  # per choice
    max_n: int = 8  # choices per prompt
    max_prompts: int = 16  # prompts in one /v1/completions request
    max_stop: int = 4  # stop strings, as OpenAI
    max_body_bytes: int = 1 << 20
    retry_after_s: int = 1  # told to clients on 429


class Metrics:
    """Prometheus metrics with vLLM/TGI-style names, in a registry of this app's own (not the global one)."""

    TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0)
    TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
    E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0)

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        m = ["model_name"]
        self.running = Gauge("genloom:num_requests_running", "Requests in the engine's running batch.", m, registry=r)
        self.waiting = Gauge("genloom:num_requests_waiting", "Requests waiting in the engine's queue.", m, registry=r)
        self.ttft = Histogram("genloom:time_to_first_token_seconds", "Time from submit to the first token.", m,
                              buckets=self.TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("genloom:time_per_output_token_seconds", "Time between consecutive output tokens.",
                              m, buckets=self.TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("genloom:e2e_request_latency_seconds", "Time from submit to the last event.", m,
                             buckets=self.E2E_BUCKETS, registry=r)
        self.prompt_tokens = Counter("genloom:prompt_tokens", "Prompt tokens processed.", m, registry=r)
        self.generation_tokens = Counter("genloom:generation_tokens", "Tokens generated.", m, registry=r)
        self.success = Counter("genloom:request_success", "Finished engine requests by finish reason.",
                               m + ["finished_reason"], registry=r)
        self.images = Counter("genloom:images_generated", "Images generated.", m, registry=r)
        self.jobs = Gauge("genloom:fine_tuning_jobs", "Fine-tuning jobs by status.", ["status"], registry=r)

    def render(self, models: dict[str, ServedModel], store=None) -> bytes:
        from prometheus_client import generate_latest

        if store is not None:
            from sqlalchemy import func, select

            from genloom.serve.database import JOB_STATES, Job

            with store.session() as s:
                counts = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            for status in JOB_STATES:
                self.jobs.labels(status).set(counts.get(status, 0))

        for name, served in models.items():
            if served.engine is None:  # image models have no decode engine
                continue
            stats = served.engine.stats()
            self.running.labels(name).set(stats.get("running", 0))
            self.waiting.labels(name).set(stats.get("waiting", 0))
        return generate_latest(self.registry)

    async def watch(self, handle, model: str, t0: float):
        """Pass a handle's events through, timing the first token, each next one and the whole request."""
        first = last = None
        reason = "cancelled"
        try:
            async for ev in handle.aevents():
                now = time.perf_counter()
                if ev.token is not None:
                    if first is None:
                        first = now
                        self.ttft.labels(model).observe(now - t0)
                    else:
                        self.tpot.labels(model).observe(now - last)
                    last = now
                if ev.finish_reason:
                    reason = ev.finish_reason
                yield ev
        except Exception:
            reason = "error"
            raise
        finally:
            self.e2e.labels(model).observe(time.perf_counter() - t0)
            self.prompt_tokens.labels(model).inc(handle.prompt_tokens or 0)
            self.generation_tokens.labels(model).inc(handle.completion_tokens or 0)
            self.success.labels(model, reason).inc()


# ---- middleware ----

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestContext:
    """Pure ASGI middleware: a request id (the client's X-Request-ID if sane), a body-size cap, an access log."""

    def __init__(self, app, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        t0, status = time.perf_counter(), [0]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = 0
        try:
            if length > self.max_body_bytes:
                resp = error_response(413, f"Request body of {length} bytes exceeds the limit of "
                                      f"{self.max_body_bytes} bytes.")
                return await resp(scope, receive, send_with_id)
            await self.app(scope, receive, send_with_id)
        finally:
            log_event("http", request_id=rid, method=scope["method"], path=scope["path"], status=status[0],
                      ms=round(1000 * (time.perf_counter() - t0), 1))


# ---- the app ----


def create_app(model_paths: list[str], *, max_batch: int = 16, max_queue: int = 64, max_tokens: int = 1024,
               max_n: int = 8, max_prompts: int = 16, max_body_bytes: int = 1 << 20, retry_after_s: int = 1,
               api_key: str | None = None, data_dir: str | None = None, db_url: str | None = None,
               jobs: bool = True, max_upload_bytes: int = 50 << 20) -> FastAPI:
    """The FastAPI app serving `model_paths` (export folders, run folders or .pt files) by folder name.

    Models are loaded and their engines started in the lifespan, once; `api_key`, when given, is required
    as a Bearer token on /v1 routes and compared in constant time. With `data_dir` (or `db_url`) the
    server keeps storage: history, uploaded files, fine-tuning jobs (run by a worker process when `jobs`),
    and API keys (once one exists, every route but /health needs one); fine-tuned models land in
    data_dir/models and are served once their job succeeds.
    """
    from genloom.serve.routes import router
    from genloom.serve.routes_images import router as images_router
    from genloom.serve.routes_jobs import router as jobs_router

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

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        models: dict[str, ServedModel] = {}
        app.state.loading = set(names)

        async def load(path):  # in a thread: requests to models already loaded go on meanwhile
            t0, name = time.perf_counter(), model_name(path)
            try:
                served = await asyncio.to_thread(load_served, path, max_batch=max_batch, max_queue=max_queue)
            except Exception as e:  # noqa: BLE001 - reported by /health and the log; the others still serve
                app.state.load_errors[name] = str(e)
                log_event("model_load_failed", model=name, path=str(path), error=str(e))
                return
            finally:
                app.state.loading.discard(name)
            models[served.name] = served
            app.state.models = {**app.state.models, served.name: served}
            log_event("model_loaded", model=served.name, path=str(path), context=served.context,
                      seconds=round(time.perf_counter() - t0, 2))

        loader = asyncio.gather(*(load(p) for p in model_paths))
        try:
            watcher = worker = None
            if app.state.store is not None:
                from genloom.serve.jobs import start_worker

                requeued = app.state.store.recover_jobs()
                if requeued:
                    log_event("jobs_requeued", jobs=requeued)
                if jobs:
                    bases = {model_name(p): str(Path(p).resolve()) for p in model_paths}
                    worker = start_worker(db_url, str(app.state.data_dir), str(app.state.data_dir / "models"), bases)
                watcher = asyncio.create_task(_register_finished(app, max_batch, max_queue))
            yield
        finally:
            await asyncio.gather(loader, return_exceptions=True)
            if watcher is not None:
                watcher.cancel()
            if worker is not None:
                worker.terminate()
                worker.join(5)
            for served in list(models.values()) + [m for m in app.state.models.values() if m not in models.values()]:
                if served.engine is not None:
                    served.engine.stop()
            app.state.models = {}

    app = FastAPI(title="genloom", summary="OpenAI-compatible API for genloom models", lifespan=lifespan)
    app.state.models = {}
    app.state.loading, app.state.load_errors = set(), {}
    app.state.limits = Limits(max_tokens=max_tokens, max_n=max_n, max_prompts=max_prompts,
                              max_body_bytes=max_body_bytes, retry_after_s=retry_after_s)
    app.state.capacity = max_batch + max_queue  # engine requests one API request may need at most
    app.state.metrics = Metrics()
    app.state.api_key = api_key
    app.state.rate = RateLimiter()
    app.state.max_upload_bytes = max_upload_bytes
    app.state.store = None
    if data_dir or db_url:
        from genloom.serve.database import Database

        app.state.data_dir = Path(data_dir or "genloom-data")
        app.state.store = Database(db_url, data_dir=app.state.data_dir)
        app.state.keys_exist = _cached(app.state.store.any_keys, seconds=2.0)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(GenloomError, _on_genloom_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(RequestContext, max_body_bytes=max_body_bytes)
    app.include_router(router)
    app.include_router(jobs_router)
    app.include_router(images_router)
    return app


def _cached(fn, seconds: float):
    """fn() remembered for a few seconds (is any key stored? asked on every request)."""
    memo = {"t": -1e9, "v": None}

    def call():
        now = time.monotonic()
        if now - memo["t"] > seconds:
            memo["v"], memo["t"] = fn(), now
        return memo["v"]

    return call


async def _register_finished(app: FastAPI, max_batch: int, max_queue: int) -> None:
    """Serve each fine-tuned model once its job succeeds; loading runs in a thread, so requests go on."""
    store, seen = app.state.store, set()
    while True:
        await asyncio.sleep(1.0)
        try:
            for job in await asyncio.to_thread(store.list_jobs, 100):
                name = job.fine_tuned_model
                if job.status != "succeeded" or not name or name in app.state.models or name in seen:
                    continue
                seen.add(name)
                path = app.state.data_dir / "models" / name
                served = await asyncio.to_thread(load_served, path, max_batch=max_batch, max_queue=max_queue)
                app.state.models = {**app.state.models, name: served}
                log_event("model_registered", model=name, job=job.id)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - keep watching; the job's own events say what failed
            log_event("model_register_failed", error=str(e))


def check_api_key(request: Request) -> None:
    """Bearer check: the static key (constant-time) or a stored key (hashed, constant-time); per-key rate limit.

    A no-op while the server has no static key and the key store is empty.
    """
    state = request.app.state
    key, store = state.api_key, getattr(state, "store", None)
    need = bool(key) or (store is not None and state.keys_exist())
    if not need:
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if key and hmac.compare_digest(given.encode(), key.encode()):
        return
    record = store.verify_key(given) if store is not None and given else None
    if record is None:
        raise ApiError(401, "Incorrect API key provided." if given else "Missing API key: send "
                       "'Authorization: Bearer <key>' (see `genloom keys create`).", code="invalid_api_key")
    request.state.key_id = record.id
    if record.rate_limit and not state.rate.allow(record.id, record.rate_limit):
        raise ApiError(429, f"Rate limit of {record.rate_limit} requests per minute reached for this key.",
                       type="rate_limit_error", code="rate_limit_exceeded",
                       headers={"Retry-After": str(state.rate.retry_after(record.id))})


class RateLimiter:
    """A sliding one-minute window of request times per key."""

    def __init__(self):
        import collections
        import threading

        self.times: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.lock = threading.Lock()

    def allow(self, key_id: str, per_minute: int) -> bool:
        now = time.monotonic()
        with self.lock:
            q = self.times[key_id]
            while q and now - q[0] > 60:
                q.popleft()
            if len(q) >= per_minute:
                return False
            q.append(now)
            return True

    def retry_after(self, key_id: str) -> int:
        q = self.times.get(key_id)
        return max(1, int(61 - (time.monotonic() - q[0]))) if q else 1


def serve(model_paths: list[str], host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **kw) -> None:
    """Run the app under uvicorn (one process: the engines own the models); `kw` goes to create_app."""
    import uvicorn

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(message)s")
    app = create_app(model_paths, **kw)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
