"""POST /v1/audio/transcriptions and /v1/audio/translations in OpenAI's shape: a multipart upload (file, model,
language, prompt, response_format, temperature, timestamp_granularities[]) read as it arrives, the file part
counted against the audio upload limit on the bytes read and spooled to a temporary file in the data directory
(held in memory when the server keeps none), decoded by PyAV and transcribed by genloom.pipelines.asr in a
worker thread."""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
import time
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.requests import ClientDisconnect

from genloom.errors import GenloomError
from genloom.pipelines import asr
from genloom.safety.policy import screen
from genloom.serve.errors import ApiError
from genloom.serve.models import asr_model
from genloom.serve.openapi import responses
from genloom.serve.routes.deps import v1
from genloom.serve.routes.files import TextUpload, read_upload

router = APIRouter()
AUDIO_LIMIT = 25 << 20  # OpenAI's limit on an audio upload (the server's --max-upload-bytes when lower)
MAX_FIELD_BYTES = 4096  # a form field other than the file (a prompt of Whisper's 224 tokens fits)
GRANULARITIES = ("segment", "word")
ROUTES = {"transcribe": "/v1/audio/transcriptions", "translate": "/v1/audio/translations"}
UPLOAD_PATHS = {"/v1/audio/transcriptions", "/v1/audio/translations"}  # bodies capped at the upload limit
FIELDS = {"transcribe": {"model", "language", "prompt", "response_format", "temperature",
                         "timestamp_granularities[]", "timestamp_granularities"},
          "translate": {"model", "prompt", "response_format", "temperature"}}


def _form(task: str) -> dict:
    props = {"file": {"type": "string", "format": "binary"}, "model": {"type": "string"},
             "prompt": {"type": "string"}, "response_format": {"type": "string", "enum": list(asr.FORMATS),
                                                                "default": "json"},
             "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0}}
    if task == "transcribe":
        props |= {"language": {"type": "string"},
                  "timestamp_granularities[]": {"type": "array", "items": {"type": "string",
                                                                           "enum": list(GRANULARITIES)}}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "model"], "properties": props}}}}}


ANSWERS = {200: {"description": "The transcript: JSON (json, verbose_json) or text (text, srt, vtt)",
                 "content": {"application/json": {"schema": {"type": "object"}},
                             "text/plain": {"schema": {"type": "string"}}}}}


class AudioUpload(TextUpload):
    """The callbacks of one streamed multipart body: any file part (checked as audio when decoded), into a
    temporary file in `folder` or, without a folder, into memory; repeated fields (timestamp_granularities[])
    kept in order."""

    ONE_FILE, DEFAULT_NAME = "Send one audio file per request.", "audio"

    def _accept(self, filename: str) -> None:  # any name: the decoder says whether it is audio
        pass

    def _open(self):
        if self.folder is None:
            return io.BytesIO()
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".audio-", suffix=".tmp")
        self.tmp = Path(tmp)
        return os.fdopen(fd, "wb")

    def _text(self, chunk: bytes, final: bool = False):  # audio is binary: only "is anything there" is noted
        self.blank = self.blank and not chunk

    def source(self):
        """The upload for the decoder: the temporary file's path, or the bytes held in memory."""
        if isinstance(self._out, io.BytesIO):
            return self._out.getvalue()
        self._out.close()
        return str(self.tmp)


def _options(upload: AudioUpload, task: str) -> dict:
    """The form's fields, checked: one 400 naming the field and its valid values for the first one wrong."""
    f = upload.fields
    unknown = sorted(set(f) - FIELDS[task])
    if unknown:
        raise ApiError(400, f"Unrecognized request argument '{unknown[0]}'; this route takes file, "
                       f"{', '.join(sorted(FIELDS[task]))}.", param=unknown[0])
    if upload.filename is None:
        raise ApiError(400, "Missing required parameter: 'file'.", param="file")
    if not f.get("model"):
        raise ApiError(400, "Missing required parameter: 'model'.", param="model")
    fmt = f.get("response_format") or "json"
    if fmt not in asr.FORMATS:
        raise ApiError(400, f"Unsupported response_format '{fmt}'; choose one of {', '.join(asr.FORMATS)}.",
                       param="response_format")
    try:
        temperature = float(f.get("temperature") or 0)
    except ValueError:
        temperature = float("nan")
    if not 0.0 <= temperature <= 1.0:
        raise ApiError(400, f"temperature must be a number between 0 and 1, got '{f.get('temperature')}'.",
                       param="temperature")
    grans = upload.lists.get("timestamp_granularities[]", []) + upload.lists.get("timestamp_granularities", [])
    bad = [g for g in grans if g not in GRANULARITIES]
    if bad:
        raise ApiError(400, f"Unsupported timestamp granularity '{bad[0]}'; choose from {', '.join(GRANULARITIES)}.",
                       param="timestamp_granularities[]")
    if grans and fmt != "verbose_json":
        raise ApiError(400, "timestamp_granularities needs response_format 'verbose_json'.",
                       param="timestamp_granularities[]")
    return {"model": f["model"], "fmt": fmt, "temperature": temperature, "language": f.get("language") or None,
            "prompt": f.get("prompt") or None, "granularities": tuple(dict.fromkeys(grans)) or ("segment",)}


async def _transcribe(request: Request, task: str):
    state = request.app.state
    folder = None
    if state.data_dir is not None:  # the upload waits in the data directory, never anywhere else
        folder = state.data_dir / "tmp"
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    upload = AudioUpload(folder, min(AUDIO_LIMIT, state.max_upload_bytes))
    try:
        await read_upload(request, upload, what="the audio", fields="the fields 'file' and 'model'")
        opts = _options(upload, task)
        served = asr_model(state, opts["model"])
        recognizer = served.loaded
        if opts["language"] is not None and opts["language"] not in recognizer.languages:
            raise ApiError(400, f"Unsupported language '{opts['language']}'; choose one of "
                           f"{', '.join(recognizer.languages)} (ISO 639-1).", param="language")
        if upload.blank:
            raise ApiError(400, "The audio file is empty.", param="file")
        t0 = time.perf_counter()
        try:
            result = await asyncio.to_thread(recognizer.transcribe, upload.source(), language=opts["language"],
                                             task=task, prompt=opts["prompt"], temperature=opts["temperature"],
                                             word_timestamps="word" in opts["granularities"])
        except GenloomError as e:
            raise ApiError(400, f"{e}.", param="file") from None
        # speech is moderated as its words: the transcript under the deployment's policy (block: 400, flag: recorded)
        flagged = await asyncio.to_thread(screen, request.app.state.moderation, [result.text], where="input",
                                          route=ROUTES[task], param="file")
        await _log(request, task, served.name, opts, result, t0, flagged)
    except ClientDisconnect:
        raise ApiError(400, "The client went away during the upload.", param="file") from None
    finally:
        upload.discard()
    if opts["fmt"] in ("json", "verbose_json"):
        return JSONResponse(asr.to_json(result, opts["fmt"], opts["granularities"]))
    return PlainTextResponse(asr.render(result, opts["fmt"]))


async def _log(request: Request, task: str, model: str, opts: dict, result, t0: float, flagged: dict | None) -> None:
    db = request.app.state.db
    if db is None:
        return
    params = {k: v for k, v in {"response_format": opts["fmt"], "language": opts["language"],
                                "temperature": opts["temperature"], "prompt": opts["prompt"]}.items() if v is not None}
    await asyncio.to_thread(db.log_request, route=ROUTES[task],
                            model=model, params=params,
                            output={"text": result.text, "language": result.language, "seconds": result.duration}
                            | ({"moderation": [flagged]} if flagged else {}),
                            key_id=getattr(request.state, "key_id", None),
                            latency_ms=round(1000 * (time.perf_counter() - t0)))


@router.post("/v1/audio/transcriptions", dependencies=v1, openapi_extra=_form("transcribe"),
             responses={**responses(503), **ANSWERS}, response_model=None)
async def transcriptions(request: Request):
    """Transcribe an audio file (WAV, FLAC, MP3, Ogg, M4A, WebM; up to 25 MB) in its own language."""
    return await _transcribe(request, "transcribe")


@router.post("/v1/audio/translations", dependencies=v1, openapi_extra=_form("translate"),
             responses={**responses(503), **ANSWERS}, response_model=None)
async def translations(request: Request):
    """Translate the speech in an audio file into English text."""
    return await _transcribe(request, "translate")
