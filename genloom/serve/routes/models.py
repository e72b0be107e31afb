"""GET /v1/models and /v1/models/{id}: what is served, with genloom's facts from each model card."""

from __future__ import annotations

from fastapi import APIRouter, Request

from genloom import families
from genloom.pipelines.asr import AsrModel
from genloom.pipelines.images import image_classes, trait
from genloom.pipelines.audio_encode import FORMATS
from genloom.pipelines.music import is_music_model
from genloom.serve.models import ServedModel, served_model
from genloom.serve.openapi import responses
from genloom.serve.protocol import ModelCard, ModelList
from genloom.serve.routes.deps import v1

router = APIRouter()


@router.get("/v1/models", dependencies=v1)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[model_card(s) for s in request.app.state.models.values()])


@router.get("/v1/models/{model_id}", dependencies=v1, responses=responses(503))
async def get_model(model_id: str, request: Request) -> ModelCard:
    return model_card(served_model(request.app.state, model_id))


def asr_card(served: ServedModel) -> ModelCard:
    """A speech recognizer's facts: what it takes and answers (/v1/audio/transcriptions and /translations)."""
    asr = served.loaded
    facts = {"family": "whisper", "kind": "speech-to-text", "parameters": asr.card.get("parameters"),
             "options": ["language", "prompt", "temperature", "timestamp_granularities"], "context": None,
             "languages": list(asr.languages), "formats": ["json", "text", "srt", "vtt", "verbose_json"],
             "description": f"{asr.card.get('source', asr.engine)}; {asr.card.get('licence', '')}; "
                            "POST /v1/audio/transcriptions, /v1/audio/translations"}
    return ModelCard(id=served.name, created=served.created, genloom=facts)


def model_card(served: ServedModel) -> ModelCard:
    if served.voice is not None:
        return speech_card(served)
    if isinstance(served.loaded, AsrModel):
        return asr_card(served)
    card = served.loaded.meta.get("card", {}) or {}
    data = card.get("data") or {}
    parameters = sum(p.numel() for p in served.loaded.model.parameters())
    record = families.get(served.loaded.family)
    facts = {"family": record.name, "kind": record.kind, "parameters": parameters,
             "options": sorted(record.sampling_options)}  # the generation options the family takes
    if record.kind == "image":
        size = served.loaded.config.image_size
        k, classes = image_classes(served.loaded)
        conditioning = "text" if trait(served.loaded.model, "text_conditional") else "class" if k else "none"
        extra = {**facts, "context": None, "sizes": [f"{size}x{size}"], "conditioning": conditioning, "classes": classes,
                 "description": str(data.get("source", "")) + (f"; {card['licence']}" if card.get("licence") else "")}
        return ModelCard(id=served.name, created=served.created, genloom=extra)
    if is_music_model(served.loaded):  # a GPT over music tokens: its kind is what it makes
        facts |= {"kind": "music", "options": ["bars", "seconds", "tempo", "seed", "primer", "temperature", "top_k",
                                               "top_p", "min_p", "repetition_penalty"]}
        extra = {**facts, "context": served.context, "formats": ["mp3", "wav", "midi", "json"],
                 "description": f"{data.get('corpus') or data.get('source', 'unknown data')}, "
                                f"{data.get('tokenizer', '?')} tokenizer; POST /v1/audio/music"}
        return ModelCard(id=served.name, created=served.created, genloom=extra)
    extra = {**facts, "context": served.context,
             "description": f"{data.get('source', 'unknown data')}, {data.get('tokenizer', '?')} tokenizer"
                            + (f", fine-tuned from {card['fine_tuned_from']}" if card.get("fine_tuned_from") else "")}
    return ModelCard(id=served.name, created=served.created, max_model_len=served.context, genloom=extra)


def speech_card(served: ServedModel) -> ModelCard:
    """A voice: what it speaks (genloom.pipelines.speech), its speakers, rate and formats."""
    voice = served.voice
    extra = {"family": type(voice).__name__, "kind": "speech", "parameters": None, "context": None,
             "options": ["voice", "speed", "response_format", "stream_format"], "voices": voice.voices,
             "sample_rate": voice.sample_rate, "formats": list(FORMATS),
             "description": f"text-to-speech voice ({voice.name}); POST /v1/audio/speech"}
    return ModelCard(id=served.name, created=served.created, genloom=extra)
