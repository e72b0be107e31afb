"""POST /v1/audio/speech in OpenAI's shape: a voice model reads the input aloud, sentence by sentence.

stream_format "audio" sends the encoded bytes as each sentence is made (chunked); "sse" sends OpenAI's
`speech.audio.delta` events (base64 audio in response_format) and a closing `speech.audio.done` with usage
(input_tokens: phoneme symbols read, output_tokens: audio frames of 256 samples). Phonemizing and synthesis run
in worker threads, so other requests go on meanwhile. The same voices and encoders as `genloom speak`.

Every answer is watermarked (genloom.safety.watermark) and carries its GB 45438 record in the `X-AIGC` header
(ASCII JSON). A wav/flac/mp3/opus file asked for with stream_format "audio" also carries the label in its metadata
and, with a signing key, a C2PA manifest: both cover the whole file, so with implicit labels on such an answer is
sent once the whole text is spoken (`audio_encode.finish`). pcm (raw samples) and sse stream sentence by sentence;
their label is the header (and the `aigc` object of the done event).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from genloom.errors import GenloomError, choices
from genloom.pipelines.audio_encode import LABEL_FORMATS, MEDIA_TYPES, Encoder, finish
from genloom.safety import labels
from genloom.safety.marks import add_tone_cue
from genloom.safety.policy import screen
from genloom.safety.watermark import audio_stream, mark_audio
from genloom.serve.errors import ApiError
from genloom.serve.models import speech_model
from genloom.serve.openapi import responses
from genloom.serve.protocol import SpeechRequest
from genloom.serve.routes.deps import v1

router = APIRouter()
FRAME = 256  # samples per output token in usage (the Piper voices' hop length)
AUDIO_RESPONSES = {200: {"description": "The speech: audio bytes in response_format, sent sentence by sentence, or "
                                        "server-sent events (stream_format sse)",
                         "content": {**{t: {"schema": {"type": "string", "format": "binary"}}
                                        for t in MEDIA_TYPES.values()},
                                     "text/event-stream": {"schema": {"type": "string"}}}}}


def _encode(voice, sentence: str, body: SpeechRequest, enc: Encoder, marks, cue: bool, stream) -> tuple[bytes, int]:
    """One sentence spoken, watermarked and encoded (a worker thread: onnxruntime, LAME and libsndfile are CPU
    work); `cue`: the audible AI cue goes before it (the first sentence, when the operator switched the cue on);
    `stream`: the answer's one watermark sequence (audio_stream), which this sentence continues."""
    audio = voice.render(sentence, speed=body.speed, voice=body.voice)
    audio = add_tone_cue(audio, voice.sample_rate) if cue else audio
    return enc.add(mark_audio(audio, voice.sample_rate, marks, stream)), len(audio)


@router.post("/v1/audio/speech", dependencies=v1, responses={**responses(503), **AUDIO_RESPONSES},
             response_model=None)
async def speech(body: SpeechRequest, request: Request) -> StreamingResponse:
    """Read `input` aloud with the voice model; the bytes stream out as each sentence is made."""
    voice = speech_model(request.app.state, body.model).voice
    if not body.input.strip():
        raise ApiError(400, "input is empty: give the text to speak.", param="input")
    if body.voice not in voice.voices:
        raise ApiError(400, f"Unknown voice '{body.voice}' for `{body.model}`; choose one of {choices(voice.voices)}.",
                       param="voice")
    try:
        sentences = await asyncio.to_thread(voice.sentences, body.input)
    except GenloomError as e:  # espeak-ng missing (a 503 naming the Debian package) or refusing the text
        missing = "not installed" in str(e)
        raise ApiError(503 if missing else 400, f"{e}.", type="server_error" if missing else "invalid_request_error",
                       param=None if missing else "input", code="phonemizer_missing" if missing else None) from None
    if not sentences:
        raise ApiError(400, "input has nothing to speak (no letters or digits).", param="input")
    flagged = await asyncio.to_thread(screen, request.app.state.moderation, [body.input], route="/v1/audio/speech",
                                      param="input")  # what is spoken is the input: block -> 400, flag -> recorded
    enc = Encoder(body.response_format, voice.sample_rate)
    t0, symbols, db = time.perf_counter(), sum(len(s) for s in sentences), request.app.state.db
    labeler, marks = request.app.state.labeler, request.app.state.watermarks
    produce_id = labels.new_produce_id("speech")
    params = body.model_dump(exclude_none=True)
    aigc = labels.aigc_object(produce_id, body.model, params, labeler)
    whole = (body.stream_format == "audio" and body.response_format in LABEL_FORMATS
             and (labeler.policy.implicit or labeler.identity is not None))

    async def log(samples: int):
        if db is not None:  # the History tab's row, once the whole text was spoken
            await asyncio.to_thread(db.log_request, route="/v1/audio/speech", model=body.model, params=params,
                                    output={"seconds": round(samples / voice.sample_rate, 3),
                                            "sentences": len(sentences), "produce_id": produce_id}
                                    | ({"moderation": [flagged]} if flagged else {}),
                                    key_id=getattr(request.state, "key_id", None), prompt_tokens=symbols,
                                    completion_tokens=samples // FRAME,
                                    latency_ms=round(1000 * (time.perf_counter() - t0)))

    async def chunks():
        samples, stream = 0, audio_stream(marks, voice.sample_rate)
        for i, sentence in enumerate(sentences):  # in order, one at a time: the stream's sequence goes on
            data, n = await asyncio.to_thread(_encode, voice, sentence, body, enc, marks,
                                              i == 0 and labeler.policy.audio_cue, stream)
            samples += n
            yield data, n
        yield await asyncio.to_thread(enc.finish), 0
        await log(samples)

    headers = {"X-Sample-Rate": str(voice.sample_rate), "Cache-Control": "no-cache",
               **({"X-AIGC": json.dumps(aigc)} if aigc else {})}
    if whole:
        async def labelled():
            audio = []
            for sentence in sentences:
                audio.append(await asyncio.to_thread(voice.render, sentence, speed=body.speed, voice=body.voice))
            clip = np.concatenate(audio) if audio else np.zeros(0, np.float32)
            meta = labels.OutputMeta(produce_id, model=body.model, parameters=params)
            data = await asyncio.to_thread(finish, clip, voice.sample_rate, body.response_format, meta, labeler, marks)
            await log(len(clip))
            yield data
        return StreamingResponse(labelled(), media_type=MEDIA_TYPES[body.response_format], headers=headers)
    if body.stream_format == "audio":
        async def audio():
            async for data, _ in chunks():
                if data:
                    yield data
        return StreamingResponse(audio(), media_type=MEDIA_TYPES[body.response_format], headers=headers)

    async def events():
        samples = 0
        try:
            async for data, n in chunks():
                samples += n
                if data:
                    delta = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}
                    yield f"data: {json.dumps(delta)}\n\n"
        except (GenloomError, OSError, RuntimeError) as e:  # the status line is gone: the error travels as an event
            err = {"message": str(e), "type": "server_error", "param": None, "code": None}
            yield f"data: {json.dumps({'type': 'error', 'error': err})}\n\n"
            return
        usage = {"input_tokens": symbols, "output_tokens": samples // FRAME, "total_tokens": symbols + samples // FRAME}
        done = {"type": "speech.audio.done", "usage": usage, **({"aigc": aigc} if aigc else {})}
        yield f"data: {json.dumps(done)}\n\n"
    return StreamingResponse(events(), media_type="text/event-stream", headers={**headers, "X-Accel-Buffering": "no"})
