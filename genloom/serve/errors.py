"""Errors in OpenAI's JSON shape {"error": {"message", "type", "param", "code"}} and the handlers that send them."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from genloom.errors import GenloomError
from genloom.safety.policy import CODE, ContentBlocked
from genloom.serve.logs import log
from genloom.serve.protocol import ErrorInfo, ErrorResponse


class ApiError(Exception):
    """An error a route raises; the handler turns it into OpenAI's error body with this status."""

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
    if kind == "invalid_json_value":  # NaN, an infinity or a lone surrogate (protocol.insane_value)
        return f"Invalid value for '{param or 'the request body'}': {err['ctx']['problem']}."
    return f"Invalid value for '{param}': {err.get('msg', 'invalid')}."


async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    # a union of types reports one error per member; the first names the field well enough
    err = next((e for e in errors if e.get("type") == "json_invalid"), errors[0] if errors else {})
    param = None if err.get("type") == "json_invalid" else _param(err.get("loc", ()))
    if err.get("type") == "invalid_json_value":
        param = err["ctx"]["param"] or None
    return error_response(400, _validation_message(err, param), param=param)


async def _on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)


async def _on_genloom_error(request: Request, exc: GenloomError) -> JSONResponse:
    return error_response(400, str(exc))


async def _on_blocked(request: Request, exc: ContentBlocked) -> JSONResponse:
    return error_response(400, f"{str(exc)[0].upper()}{str(exc)[1:]}.", param=exc.param, code=CODE)


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        return error_response(404, f"Unknown route: {request.method} {request.url.path}", code="not_found")
    return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(500, "The server had an error while processing your request.", "server_error")


def add_error_handlers(app: FastAPI) -> None:
    """Every failure leaves the server as OpenAI's error body: bad input 400, unknown route 404, bugs 500."""
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(GenloomError, _on_genloom_error)
    app.add_exception_handler(ContentBlocked, _on_blocked)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
