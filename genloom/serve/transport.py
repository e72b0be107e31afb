"""What reaches the app, as pure ASGI middleware: request ids, body caps counted on the bytes read, the access
log, the Host and Origin checks, and true OPTIONS/405 answers.

Outermost first: RequestContext (an id and a log line for every response, unhandled errors as OpenAI's 500),
BrowserGuard (DNS rebinding: only configured host names; cross-site writes: only listed origins), Starlette's
CORSMiddleware when origins are listed, AllowedMethods (the methods a path really has), then the routes.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.routing import Match, Mount

from genloom.errors import GenloomError
from genloom.serve.errors import error_response
from genloom.serve.logs import log_event, log_exception

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class BodyTooLarge(HTTPException):
    """Raised by the capped `receive`; Starlette's HTTPException, so FastAPI's body reading passes it on as a 413."""

    def __init__(self, limit: int, length: int | None = None):
        size = f"of {length} bytes " if length is not None else ""
        super().__init__(413, f"Request body {size}exceeds the limit of {limit} bytes.")


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class RequestContext:
    """A request id (the client's X-Request-ID if sane) on every response, a body cap counted on the bytes read
    whatever the framing (`body_limit(scope)` bytes), one access-log line with the status really sent, and
    OpenAI's 500 for an unhandled error."""

    def __init__(self, app, body_limit: Callable[[dict], int]):
        self.app, self.body_limit = app, body_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        given = headers.get("x-request-id", "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        limit, t0 = self.body_limit(scope), time.perf_counter()
        sent = {"status": 0, "read": 0}

        async def receive_capped():
            message = await receive()
            if message["type"] == "http.request":
                sent["read"] += len(message.get("body", b""))
                if sent["read"] > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        error = None
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = 0
        try:
            if length > limit:
                raise BodyTooLarge(limit, length)
            await self.app(scope, receive_capped, send_with_id)
        except BodyTooLarge as e:  # raised outside a route (a route's own reading is answered by its handler)
            error = "body_too_large"
            if not sent["status"]:
                await error_response(413, e.detail)(scope, receive, send_with_id)
        except Exception as e:  # noqa: BLE001 - any bug becomes OpenAI's 500 with this request's id
            error = type(e).__name__
            log_exception("unhandled_error", request_id=rid, method=scope["method"], path=scope["path"], error=error)
            if not sent["status"]:
                await error_response(500, "The server had an error while processing your request.",
                                     "server_error")(scope, receive, send_with_id)
        finally:
            log_event("http", request_id=rid, method=scope["method"], path=scope["path"], status=sent["status"],
                      ms=round(1000 * (time.perf_counter() - t0), 1), **({"error": error} if error else {}))


# ---- hosts and origins ----


def host_name(host: str) -> str:
    """The name in a Host header, lower case, without port or trailing dot: '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:host.index("]")] if "]" in host else ""
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.rstrip(".")


def _origin(scheme: str, netloc: str) -> str:
    """scheme://host[:port] as browsers send it in Origin (the scheme's default port left out)."""
    netloc = netloc.lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and netloc.endswith(default):
        netloc = netloc[: -len(default)]
    return f"{scheme}://{netloc}"


def parse_public_url(url: str | None) -> str | None:
    """The operator's public base URL, checked: http(s)://host[:port][/path], without the trailing slash."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise GenloomError(f"invalid public URL '{url}': give http(s)://HOST[:PORT][/PATH], such as "
                           "https://gen.example.org")
    return url.rstrip("/")


def parse_origins(origins) -> set[str]:
    """CORS origins, checked: each scheme://host[:port] exactly, as browsers send them."""
    out = set()
    for o in origins or ():
        parts = urlsplit(o)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
                or parts.query or parts.fragment:
            raise GenloomError(f"invalid CORS origin '{o}': give scheme://HOST[:PORT] with no path, such as "
                               "https://app.example.org")
        out.add(_origin(parts.scheme, parts.netloc))
    return out


def allowed_host_names(bind_host: str, extra, public_url: str | None) -> set[str]:
    """Loopback names, the bound address (unless a wildcard), the public URL's host and the operator's list."""
    names = set(LOOPBACK_HOSTS) | {host_name(h) for h in extra or () if h.strip()}
    if bind_host not in ("", "0.0.0.0", "::"):
        names.add(host_name(f"[{bind_host}]" if ":" in bind_host else bind_host))
    if public_url:
        names.add(urlsplit(public_url).hostname.rstrip(".").lower())
    return names


class BrowserGuard:
    """DNS rebinding and cross-site writes: a Host outside `hosts` ('*' for any) is a 400; a state-changing
    request from a page on another origin (Origin not this server's own and not in `origins`) is a 403."""

    def __init__(self, app, hosts: set[str], origins: set[str]):
        self.app, self.hosts, self.origins = app, hosts, origins

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        host = headers.get("host", "")
        if "*" not in self.hosts and host_name(host) not in self.hosts:
            return await error_response(400, f"Host '{host}' is not served here; the server answers to "
                                        f"{', '.join(sorted(self.hosts))} (genloom serve --allowed-hosts).",
                                        code="invalid_host")(scope, receive, send)
        origin = headers.get("origin")
        cross_site = headers.get("sec-fetch-site") == "cross-site"
        if scope["method"] not in SAFE_METHODS and (origin is not None or cross_site):
            own = _origin(scope.get("scheme", "http"), host)
            if origin != own and origin not in self.origins:
                return await error_response(403, f"Cross-origin request from '{origin}' refused; allowed origins: "
                                            f"{', '.join(sorted(self.origins)) or 'none'} (genloom serve "
                                            "--cors-origins).", code="origin_not_allowed")(scope, receive, send)
        await self.app(scope, receive, send)


# ---- OPTIONS and 405 ----


def _route_takes(route, scope, method: str) -> bool:
    if isinstance(route, Mount):  # the web UI's static files
        return method in ("GET", "HEAD") and route.matches(scope)[0] == Match.FULL
    return route.matches({**scope, "method": method})[0] == Match.FULL


class AllowedMethods:
    """OPTIONS answers 204 with the Allow header a path really has; a method it lacks is OpenAI's 405 with Allow.

    Asked of every route of `router` per method, so routes sharing a path (GET and POST /v1/files) are both
    counted; paths no route has go on to the router's 404.
    """

    def __init__(self, app, router):
        self.app, self.router = app, router

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or any(_route_takes(r, scope, scope["method"]) for r in self.router.routes):
            return await self.app(scope, receive, send)
        methods = {m for m in METHODS if any(_route_takes(r, scope, m) for r in self.router.routes)}
        if not methods:
            return await self.app(scope, receive, send)
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        if scope["method"] == "OPTIONS":
            response = Response(status_code=204, headers={"Allow": allow})
        else:
            response = error_response(405, f"Method {scope['method']} is not allowed on {scope['path']}; "
                                      f"allowed: {allow}.", code="method_not_allowed", headers={"Allow": allow})
        await response(scope, receive, send)


def add_transport(app, *, host: str, allowed_hosts, public_url: str | None, cors_origins: set[str],
                  body_limit: Callable[[dict], int]) -> None:
    """Wrap `app` in the middleware above, outermost last (Starlette's add_middleware order)."""
    app.add_middleware(AllowedMethods, router=app.router)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=sorted(cors_origins), allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["x-request-id"])
    own = {_origin(urlsplit(public_url).scheme, urlsplit(public_url).netloc)} if public_url else set()
    app.add_middleware(BrowserGuard, hosts=allowed_host_names(host, allowed_hosts, public_url),
                       origins=cors_origins | own)
    app.add_middleware(RequestContext, body_limit=body_limit)
