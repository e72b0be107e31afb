"""The app's OpenAPI document as the server really answers: OpenAI's error body for each error status a
route can give (400, 401, 404, 413, 429, 503), and no FastAPI 422, which this server never sends."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

try:  # FastAPI >= 0.16x keeps included routers nested; this walks their routes
    from fastapi.routing import iter_route_contexts
except ImportError:  # older FastAPI: app.routes holds every route itself
    def iter_route_contexts(routes):
        return routes

from genloom.serve.auth import check_api_key
from genloom.serve.protocol import ErrorInfo, ErrorResponse

ERROR_STATUS = {
    400: "Invalid request: a field is missing, of the wrong type or out of range, or the model cannot honour it.",
    401: "Missing or incorrect API key (only while the server has keys).",
    404: "Unknown model, file, job or image, or a server that keeps no storage.",
    413: "The request body is larger than the server's limit.",
    429: "The API key's rate limit is reached, or the model's queue is full: retry after Retry-After seconds.",
    503: "The model is still loading: retry after Retry-After seconds.",
}
_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}


def responses(*statuses: int) -> dict:
    """A route's `responses=` for the error answers beyond those every route of its kind gives (see below)."""
    return {s: {"model": ErrorResponse, "description": ERROR_STATUS[s]} for s in statuses}


def error_statuses(route, op: dict) -> set[int]:
    """The error answers every route of this kind can give: 400 when it reads input, 413 when it has a body,
    401 and 429 behind the key check, 404 under /v1 and /ui/api (an unknown id, or no storage)."""
    codes = set()
    if op.get("requestBody") or op.get("parameters"):
        codes.add(400)
    if op.get("requestBody"):
        codes.add(413)
    if any(d.dependency is check_api_key for d in route.dependencies):
        codes |= {401, 429}
    if route.path_format.startswith(("/v1/", "/ui/api/")):
        codes.add(404)
    return codes


def document(app: FastAPI) -> dict:
    """FastAPI's document with each operation's error answers put right; built once, then cached."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description,
                      routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["ErrorInfo"] = ErrorInfo.model_json_schema()
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas["ErrorResponse"].pop("$defs", None)
    for route in iter_route_contexts(app.routes):  # an APIRoute, or its context in an included router
        if not isinstance(getattr(route, "original_route", route), APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods:
            op = doc["paths"].get(route.path_format, {}).get(method.lower())
            if op is None:
                continue
            answers = op.setdefault("responses", {})
            answers.pop("422", None)
            for code in sorted(error_statuses(route, op)):
                answers.setdefault(str(code), {"description": ERROR_STATUS[code], "content": _ERROR_BODY})
    app.openapi_schema = doc
    return doc


def install(app: FastAPI) -> None:
    app.openapi = lambda: document(app)
