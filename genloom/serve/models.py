"""The models a server holds: loading one (text engine, image model or voice), its chat template, finding it by name."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from genloom import families
from genloom.checkpoints import load_model
from genloom.data.text import DEFAULT_CHAT_TEMPLATE, read_chat_template
from genloom.errors import GenloomError, choices
from genloom.files import ROOT
from genloom.knowledge.grounding import Grounding
from genloom.pipelines.speech import Voice, load_voice, voice_kind
from genloom.models.runtime import default_dtype, prepare
from genloom.pipelines.asr import AsrModel, is_whisper_folder, load_asr
from genloom.pipelines.music import is_music_model
from genloom.serve.engine import TextEngine
from genloom.serve.engine_process import EngineProcess
from genloom.serve.errors import ApiError
from genloom.serve.logs import log_event
from genloom.serve.retrieval import KbRef, load_grounding


@dataclass
class ChatTemplate:
    """Role prefixes around each message, the cue that asks the model for a reply, and its stop strings."""

    system: str
    user: str
    assistant: str
    generation_prompt: str
    stop: list[str]

    @classmethod
    def load(cls, folder: Path) -> ChatTemplate:
        """The folder's chat_template.json over the default; unknown keys and wrong types are errors."""
        spec = dict(DEFAULT_CHAT_TEMPLATE)
        path = folder / "chat_template.json"
        given = read_chat_template(folder)
        if given is not None:
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

    def render(self, messages: list[tuple[str, str]], context: str = "") -> str:
        """(role, content) pairs to the prompt text, ending with the generation prompt; `context` (retrieved
        passages as genloom.knowledge.grounding lays them out) goes right before the last user turn."""
        roles = {"system": self.system, "developer": self.system, "user": self.user, "assistant": self.assistant}
        turns = [roles[r].replace("{content}", c) for r, c in messages]
        if context:
            last = max((i for i, (r, _) in enumerate(messages) if r == "user"), default=len(turns))
            turns.insert(last, context)
        return "".join(turns) + self.generation_prompt


ENGINES = ("thread", "process")  # where a text model's decode engine runs (load_served)


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise GenloomError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)}")


@dataclass
class ServedModel:
    name: str
    loaded: object  # genloom.checkpoints.Loaded
    engine: TextEngine | EngineProcess | None  # None for an image model (sampled in a thread by the images route)
    template: ChatTemplate | None
    context: int
    created: int = field(default_factory=lambda: int(time.time()))
    grounding: Grounding = field(default_factory=Grounding)  # retrieval settings (the folder's grounding.json)
    kb_ref: str | None = None  # the knowledge base grounding.json names (resolved by the app against its data dir)
    kb: KbRef | None = None  # the base this model answers from (--kb or kb_ref), None: ungrounded
    kb_building: str | None = None  # the bundled corpus whose base is being built in the background (then kb)
    kb_error: str | None = None  # why building that base failed
    voice: Voice | None = None  # a text-to-speech voice (loaded is None then): spoken by /v1/audio/speech

    @property
    def tokenizer(self):
        return self.loaded.tokenizer


def model_name(path: str | Path) -> str:
    """The name a client asks for: the model folder's name ('chat', 'kjv'); a run's name for run/best."""
    p = Path(path).resolve()
    if p.is_file():
        return p.parent.name if p.suffix == ".safetensors" else p.stem
    return p.parent.name if p.name == "best" else p.name


def load_served(path: str | Path, *, max_batch: int, max_queue: int, device=None, dtype: str | None = None,
                compile: bool = False, watermarks=None, engine: str = "thread") -> ServedModel:
    """Load a model (onto `device`, default the CPU); a text model runs in `dtype` (default:
    genloom.models.runtime.default_dtype), its decode step compiled if asked, and gets its decode engine started
    and its chat template read. `engine`: "thread" (a TextEngine in this process) or "process" (an EngineProcess:
    the same engine in a child process that loads its own copy of the model; this one keeps its tokenizer, config
    and card, unconverted)."""
    check_engine(engine)
    name = model_name(path)
    if voice_kind(path) is not None:  # a voice folder (genloom.pipelines.speech.LOADERS knows its kind)
        return ServedModel(name, None, None, None, 0, voice=load_voice(path))
    if is_whisper_folder(path):  # a speech recognizer: served by /v1/audio/transcriptions and /translations
        return ServedModel(name, load_asr(path), None, None, 0)
    loaded = load_model(path, device=device)
    kind = families.get(loaded.family).kind
    if kind == "image":
        loaded.lock = threading.Lock()
        return ServedModel(name, loaded, None, None, 0)
    if is_music_model(loaded):  # a GPT over music tokens: sampled whole by /v1/audio/music, not by the text engine
        loaded.lock = threading.Lock()
        return ServedModel(name, loaded, None, None, int(loaded.config.block_size))
    if kind != "text" or loaded.tokenizer is None:
        raise GenloomError(f"{path} is a '{loaded.family}' model; the server serves text models with a tokenizer "
                           f"({', '.join(families.of_kind('text'))}) and image models ({', '.join(families.of_kind('image'))})")
    dtype = dtype or default_dtype(loaded.meta)
    if engine == "thread":  # a process engine's child prepares its own copy; this one only answers about itself
        loaded.model = prepare(loaded.model, dtype, compile, device=str(device or "cpu"))
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    template = ChatTemplate.load(folder)
    grounding, kb_ref = load_grounding(folder)
    if engine == "process":
        text_engine = EngineProcess(path, loaded.tokenizer, loaded.config, max_batch=max_batch, max_queue=max_queue,
                                    name=name, watermarks=watermarks, dtype=dtype, compile=compile,
                                    device=str(device or "cpu"))
    else:
        text_engine = TextEngine(loaded.model, loaded.tokenizer, max_batch=max_batch, max_queue=max_queue, name=name,
                                 watermarks=watermarks)
    text_engine.start()
    return ServedModel(name, loaded, text_engine, template, int(loaded.config.block_size), grounding=grounding,
                       kb_ref=kb_ref)


def served_model(state, name: str) -> ServedModel:
    """The served model `name` (404 unknown, 503 still loading)."""
    models = state.models
    if name in state.loading:
        raise ApiError(503, f"The model `{name}` is still loading; retry shortly.", type="server_error",
                       code="model_loading", headers={"Retry-After": "1"})
    if name not in models:
        raise ApiError(404, f"The model `{name}` does not exist. Available: {', '.join(sorted(models))}.",
                       param="model", code="model_not_found")
    return models[name]


def _not_audio(served: ServedModel) -> ServedModel:
    if served.voice is not None:
        raise ApiError(400, f"`{served.name}` is a speech model (a voice); use /v1/audio/speech.", param="model")
    if isinstance(served.loaded, AsrModel):
        raise ApiError(400, f"`{served.name}` is a speech recognition model; use /v1/audio/transcriptions.",
                       param="model")
    return served


def speech_model(state, name: str) -> ServedModel:
    """The served voice `name` (404 unknown, 503 still loading, 400 a model that is not a voice)."""
    served = served_model(state, name)
    if served.voice is None:
        voices = sorted(n for n, m in state.models.items() if m.voice is not None)
        raise ApiError(400, f"`{name}` is not a speech model; the voices served here: {', '.join(voices) or 'none'}.",
                       param="model")
    return served


def asr_model(state, name: str) -> ServedModel:
    """The served speech recognition model `name` (404 naming the ones served, 503 still loading)."""
    served = state.models.get(name)
    if name in state.loading or served is not None and isinstance(served.loaded, AsrModel):
        return served_model(state, name)
    valid = sorted(n for n, m in state.models.items() if isinstance(m.loaded, AsrModel))
    raise ApiError(404, f"The model `{name}` is not a speech recognition model served here; choose one of: "
                   f"{', '.join(valid) or 'none (serve a Whisper folder such as models/asr-whisper-base)'}.",
                   param="model", code="model_not_found")


def text_model(state, name: str) -> ServedModel:
    """The served text model `name` (404 unknown, 503 still loading, 400 an image model)."""
    served = _not_audio(served_model(state, name))
    if is_music_model(served.loaded):
        raise ApiError(400, f"`{name}` is a music model; use /v1/audio/music.", param="model")
    if served.engine is None:
        raise ApiError(400, f"`{name}` is an image model ({served.loaded.family}); use /v1/images/generations.",
                       param="model")
    return served


def image_model(state, name: str) -> ServedModel:
    """The served image model `name` (404 unknown, 503 still loading, 400 a text model)."""
    served = _not_audio(served_model(state, name))
    if is_music_model(served.loaded):
        raise ApiError(400, f"`{name}` is a music model; use /v1/audio/music.", param="model")
    if served.engine is not None:
        raise ApiError(400, f"`{name}` is a text model; use /v1/completions or /v1/chat/completions.", param="model")
    return served


def music_model(state, name: str) -> ServedModel:
    """The served music model `name` (404 unknown, 503 still loading, 400 a text or image model)."""
    served = _not_audio(served_model(state, name))
    if not is_music_model(served.loaded):
        kind = families.get(served.loaded.family).kind
        raise ApiError(400, f"`{name}` is a{'n' if kind == 'image' else ''} {kind} model, not a music model; "
                       f"serve one such as models/chorales.", param="model")
    return served


class FineTuned:
    """Serves each succeeded job's model; a job is only shown as succeeded once its model is served.

    The worker (another process) marks a job succeeded once its export sits complete in `models_dir`;
    the routes that show jobs, and a background watcher, call `register` first.
    """

    def __init__(self, models_dir: Path, *, max_batch: int, max_queue: int):
        self.models_dir, self.max_batch, self.max_queue = Path(models_dir), max_batch, max_queue
        self.failed: dict[str, str] = {}
        self.lock = asyncio.Lock()

    async def register(self, state, jobs) -> None:
        for job in jobs:
            name = job.fine_tuned_model
            if job.status != "succeeded" or not name or name in state.models or name in self.failed:
                continue
            async with self.lock:  # one load per model, even when several readers ask at once
                if name in state.models:
                    continue
                try:
                    served = await asyncio.to_thread(load_served, self.models_dir / name, max_batch=self.max_batch,
                                                     max_queue=self.max_queue, watermarks=state.watermarks,
                                                     engine=state.inference["engine"])
                except Exception as e:  # noqa: BLE001 - logged; the job's own events say what it made
                    self.failed[name] = str(e)
                    log_event("model_register_failed", model=name, job=job.id, error=str(e))
                    continue
                state.models = {**state.models, name: served}
                log_event("model_registered", model=name, job=job.id)


BUNDLED_MODELS = ("chat", "chat-kb", "kjv", "tang", "chorales", "fmnist-diffusion", "fmnist-text2img", "fmnist-dcgan",
                  "fmnist-vae", "fmnist-vqvae", "dcgan-faces", "cdcgan-eyes", "asr-whisper-base")
BUNDLED_VOICES = ("voice-joe", "voice-joe-fs2")  # the imported Piper voice (scripts/setup.sh) and the trained starter


def bundled_model_paths() -> list[Path]:
    """What `genloom serve` serves by default: the bundled models that are present (the two pretrained GANs,
    the Whisper speech recognizer and the joe voice appear once scripts/setup.sh has imported them)."""
    models = ROOT / "models"
    return ([models / n for n in BUNDLED_MODELS
             if (models / n / "model.safetensors").exists() or is_whisper_folder(models / n)]
            + [models / n for n in BUNDLED_VOICES if voice_kind(models / n) is not None])
