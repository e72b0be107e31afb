"""POST /v1/watermarks/detect (a genloom extension): is this text, image or audio marked with this server's key?"""

from __future__ import annotations

import asyncio
import base64
import binascii

from fastapi import APIRouter, Request

from genloom.errors import GenloomError
from genloom.safety import watermark
from genloom.serve.errors import ApiError
from genloom.serve.models import text_model
from genloom.serve.openapi import responses
from genloom.serve.protocol import WatermarkDetectRequest, WatermarkDetectResponse
from genloom.serve.routes.deps import v1

router = APIRouter()
SUMMARY = ("kind", "method", "detected", "z", "p_value", "threshold")


@router.post("/v1/watermarks/detect", dependencies=v1, responses=responses(503))
async def detect(body: WatermarkDetectRequest, request: Request) -> WatermarkDetectResponse:
    """A text is read with the named model's tokenizer (its green lists depend on the vocabulary); a file's
    kind (image or audio) is told by its content."""
    marks = request.app.state.watermarks
    if not marks.on:
        raise ApiError(400, "Watermarks are off on this server (genloom serve --watermark off): there is no key to "
                       "detect with.", code="watermarks_off")
    if body.text is not None:
        if body.model is None:
            raise ApiError(400, "A text's watermark is read with the model's tokenizer: give model.", param="model")
        served = text_model(request.app.state, body.model)
        tok, vocab = served.tokenizer, int(served.loaded.config.vocab_size)
        data, param = body.text.encode("utf-8"), "text"
    else:
        try:
            data, param = base64.b64decode(body.file, validate=True), "file"
        except (binascii.Error, ValueError):
            raise ApiError(400, "file is not valid base64.", param="file") from None
        tok = vocab = None
    try:
        kind = watermark.kind_of(data)
        if param == "file" and kind == "text":
            raise GenloomError("file is not an image (PNG, JPEG, WebP, GIF, BMP) or audio (WAV, MP3, FLAC, Ogg); "
                               "send a text as text with its model")
        report = await asyncio.to_thread(watermark.detect_bytes, data, marks.secret, tokenizer=tok, vocab=vocab)
    except GenloomError as e:
        raise ApiError(400, f"{e}.", param=param) from None
    return WatermarkDetectResponse(**{k: report[k] for k in SUMMARY},
                                   details={k: v for k, v in report.items() if k not in SUMMARY})
