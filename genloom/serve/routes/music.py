"""POST /v1/audio/music (a genloom extension beside OpenAI's /v1/audio routes): a music model's piece as MP3, WAV,
MIDI, or JSON holding the MIDI, the MP3 and the piano roll. The same `compose` and renderers as `genloom generate`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from genloom.errors import GenloomError
from genloom.pipelines import music
from genloom.safety import labels
from genloom.safety.policy import midi_texts, screen
from genloom.serve.errors import ApiError
from genloom.serve.models import music_model
from genloom.serve.openapi import responses
from genloom.serve.protocol import MusicRequest, MusicResponse, new_id
from genloom.serve.routes.deps import require_db, v1

router = APIRouter()
MEDIA_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "midi": "audio/midi"}
AUDIO_RESPONSES = {200: {"description": "The piece: audio bytes (mp3, wav), a MIDI file, or JSON (response_format)",
                         "content": {**{t: {"schema": {"type": "string", "format": "binary"}}
                                        for t in MEDIA_TYPES.values()},
                                     "application/json": {"schema": {"$ref": "#/components/schemas/MusicResponse"}}}}}


def _primer(body: MusicRequest, request: Request) -> bytes | None:
    """The primer's bytes from base64 or an uploaded file; a 400 naming the field when it is not MIDI."""
    if body.primer is not None and body.primer_file is not None:
        raise ApiError(400, "Give the primer as base64 (primer) or as a file id (primer_file), not both.",
                       param="primer")
    if body.primer is not None:
        try:
            data, param = base64.b64decode(body.primer, validate=True), "primer"
        except (binascii.Error, ValueError):
            raise ApiError(400, "primer is not valid base64.", param="primer") from None
    elif body.primer_file is not None:
        db = require_db(request)
        rec = db.get_file(body.primer_file)
        if rec is None:
            raise ApiError(404, f"No such file: '{body.primer_file}'.", param="primer_file", code="file_not_found")
        data, param = db.file_path(rec).read_bytes(), "primer_file"
    else:
        return None
    try:
        music.read_midi(data, param)
    except GenloomError as e:
        raise ApiError(400, f"{e}.", param=param) from None
    return data


LABEL_FORMATS = {"midi": "midi", "audio": "mp3", "png": "png", "mp3": "mp3", "wav": "wav"}


def _render(piece: music.Music, fmt: str, produce_id: str, model: str, labeler: labels.Labeler, marks=None) -> dict:
    """The bytes the response needs, watermarked and labelled (worker thread: FluidSynth, LAME and signing are CPU
    work)."""
    cue = labels.wav_cue(labeler)
    if fmt == "json":
        out = {"midi": piece.midi(), "audio": music.audio(piece, "mp3", cue, marks), "png": music.piano_roll_png(piece)}
    else:
        out = {"body": music.audio(piece, fmt, cue, marks)}
    return {k: labels.label_bytes(v, LABEL_FORMATS[k if k != "body" else fmt],
                                  labels.OutputMeta(f"{produce_id}-{k if k != 'body' else fmt}", model,
                                                    piece.parameters), labeler) for k, v in out.items()}


@router.post("/v1/audio/music", dependencies=v1, responses={**responses(503), **AUDIO_RESPONSES},
             response_model=None)
async def compose(body: MusicRequest, request: Request):
    """Sample a piece in a worker thread under the model's lock, then render it (FluidSynth, LAME)."""
    served = music_model(request.app.state, body.model)
    primer = _primer(body, request)
    flagged = await asyncio.to_thread(screen, request.app.state.moderation, midi_texts(primer), route="/v1/audio/music",
                                      param="primer")  # the primer's titles, markers and lyrics
    opts = music.MusicOptions(bars=body.bars, seconds=body.seconds, tempo=body.tempo, seed=body.seed,
                              temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, min_p=body.min_p,
                              repetition_penalty=body.repetition_penalty)
    try:
        opts.check()
        if body.response_format != "midi":
            music.fluidsynth(), music.soundfont()
    except GenloomError as e:
        missing = "Debian package" in str(e)
        raise ApiError(503 if missing else 400, f"{e}.", type="server_error" if missing else "invalid_request_error",
                       param=None if missing else "bars", code="renderer_missing" if missing else None) from None
    t0 = time.perf_counter()

    def run():
        with served.loaded.lock:
            return music.compose(served.loaded, opts, primer)

    piece = await asyncio.to_thread(run)
    mid = new_id("music")  # the piece's id; each file's ProduceID is it + the file's kind (history: produce_id)
    out = await asyncio.to_thread(_render, piece, body.response_format, mid, served.name, request.app.state.labeler,
                                  request.app.state.watermarks)
    db = request.app.state.db
    if db is not None:
        await asyncio.to_thread(db.log_request, route="/v1/audio/music", model=served.name,
                                params=body.model_dump(exclude_none=True, exclude={"primer"}) | {"seed": piece.seed},
                                output={"seconds": round(piece.seconds, 3), "finish_reason": piece.finish_reason,
                                        "produce_id": mid} | ({"moderation": [flagged]} if flagged else {}),
                                key_id=getattr(request.state, "key_id", None), prompt_tokens=piece.prompt_tokens,
                                completion_tokens=piece.new_tokens,
                                latency_ms=round(1000 * (time.perf_counter() - t0)))
    headers = {"X-Genloom-Seed": str(piece.seed), "X-Genloom-Seconds": f"{piece.seconds:.3f}",
               "X-Genloom-Produce-Id": f"{mid}-{body.response_format}"}
    if body.response_format != "json":
        return Response(out["body"], media_type=MEDIA_TYPES[body.response_format], headers=headers)
    b64 = {k: base64.b64encode(v).decode() for k, v in out.items()}
    return MusicResponse(id=mid, model=served.name, seed=piece.seed, tempo=piece.tempo,
                         seconds=round(piece.seconds, 3), bars=piece.parameters.get("bars"),
                         new_tokens=piece.new_tokens, finish_reason=piece.finish_reason, midi=b64["midi"],
                         audio=b64["audio"], piano_roll=b64["png"],
                         aigc=labels.aigc_object(mid, served.name, piece.parameters, request.app.state.labeler))
