"""Every request and response schema of the OpenAI-compatible API, in OpenAI's shapes (vLLM's `protocol.py`).

Text requests are strict: wrong types are not coerced ("5" is not an int) and fields OpenAI would reject are
errors, so a client learns about a typo instead of getting silently ignored options. Fields OpenAI knows
but genloom cannot honour (logprobs, logit_bias, tools, ...) are accepted at their neutral value only, and
the schemas say so, so that /openapi.json describes exactly the requests the server accepts. No request
carries NaN, an infinity or an unpaired UTF-16 surrogate anywhere: each is a 400 naming the field.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from genloom.pipelines.music import MAX_BARS, MAX_SECONDS, TEMPO_RANGE
from genloom.pipelines.speech import MAX_INPUT, SPEED_RANGE
from genloom.sample import SamplingParams

_STRICT = ConfigDict(extra="forbid", strict=True)
_CLOSED = ConfigDict(extra="forbid")  # unknown fields are errors; "5" may still stand for 5
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # a 64-bit signed integer, as OpenAI's seed
Seed = Annotated[Optional[int], Field(None, ge=SEED_MIN, le=SEED_MAX)]
NonEmpty = Annotated[str, Field(min_length=1)]


def insane_value(data) -> tuple[str, str] | None:
    """(where, what) of the first NaN, infinity or unpaired surrogate in parsed JSON, else None.

    Python's json module reads NaN, Infinity and 1e999 as floats and "\\ud800" as a lone surrogate; none of
    them can be written back as JSON (or UTF-8), so the request is refused before anything stores or samples it.
    """
    stack = [(data, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where, f"{value} is not a finite number"
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return where, "it holds an unpaired UTF-16 surrogate, which is not valid Unicode text"
        elif isinstance(value, dict):
            for k, v in value.items():
                stack.append((k, where))
                stack.append((v, f"{where}.{k}" if where else str(k)))
        elif isinstance(value, (list, tuple)):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))
    return None


class _Request(BaseModel):
    """A request body: refuses NaN, infinities and unpaired surrogates anywhere in it (a 400, never a 500)."""

    @model_validator(mode="before")
    @classmethod
    def _sane(cls, data):
        bad = insane_value(data)
        if bad is not None:
            raise PydanticCustomError("invalid_json_value", "Invalid value for '{param}': {problem}.",
                                      {"param": bad[0], "problem": bad[1]})
        return data


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class _SamplingRequest(_Request):
    """The sampling fields the two generation endpoints share."""

    model_config = _STRICT

    model: str
    max_tokens: Optional[int] = Field(None, ge=1)  # the server's limit (--max-tokens) bounds it from above
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: Union[str, list[str], None] = None
    seed: Seed = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    logit_bias: Optional[dict[str, float]] = Field(None, max_length=0)  # genloom has no logit bias
    # vLLM's sampling extensions (the openai client sends them in extra_body)
    min_tokens: Optional[int] = Field(None, ge=0)  # no end-of-text or stop string before this many tokens
    top_k: int = Field(0, ge=-1)  # keep the k likeliest tokens; 0 or -1: off
    min_p: float = Field(0.0, ge=0, lt=1)  # drop tokens below min_p times the top probability (Nguyen et al. 2024)
    repetition_penalty: float = Field(1.0, gt=0, le=100)  # CTRL's (Keskar et al. 2019); 1: off

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def to_sampling_params(self, *, max_new_tokens: int, extra_stop: list[str] = (), choice: int = 0) -> SamplingParams:
        """The library's SamplingParams for choice `choice` of a prompt (seeded seed + choice)."""
        return SamplingParams(
            max_new_tokens=max_new_tokens, min_new_tokens=min(self.min_tokens or 0, max_new_tokens),
            temperature=self.temperature, top_k=max(self.top_k, 0), top_p=self.top_p, min_p=self.min_p,
            repetition_penalty=self.repetition_penalty, presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty, stop=[*extra_stop, *self.stop_list()],
            seed=None if self.seed is None else self.seed + choice,
        )


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(_SamplingRequest):
    # a string, a list of strings, token ids, or a list of token-id lists (OpenAI's four prompt forms)
    prompt: Union[NonEmpty, Annotated[list[NonEmpty], Field(min_length=1)], TokenIds,
                  Annotated[list[TokenIds], Field(min_length=1)]]
    max_tokens: Optional[int] = Field(16, ge=1)  # OpenAI's default for /v1/completions
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=0)  # genloom returns no log-probabilities
    best_of: Optional[int] = Field(None, ge=1)  # accepted only when equal to n
    suffix: None = None  # genloom models do not fill in the middle

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]
    name: Optional[str] = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ResponseFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text"]  # genloom models have no JSON mode


class FileSearchTool(BaseModel):
    """OpenAI's file_search tool (its Responses API shape): ground the reply in these vector stores' passages.

    genloom retrieves for the last user message before generating (hybrid search), puts the passages that
    reach `min_cosine` in the prompt, and returns them as the message's `sources`; with none it answers that
    the documents do not say."""

    model_config = _STRICT
    type: Literal["file_search"]
    vector_store_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=8)
    max_num_results: Optional[int] = Field(None, ge=1, le=20)  # passages in the prompt (default: the model's k)
    min_cosine: Optional[float] = Field(None, ge=-1, le=1)  # genloom: the relevance floor (default: the model's)


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)  # OpenAI's newer name for max_tokens
    logprobs: Optional[Literal[False]] = None  # genloom returns no log-probabilities
    top_logprobs: Optional[int] = Field(None, ge=0, le=0)
    parallel_tool_calls: Optional[bool] = None
    tools: Optional[list[FileSearchTool]] = Field(None, max_length=1)  # retrieval only: no function calling
    tool_choice: Optional[Literal["none", "auto"]] = None  # "none": do not search with the request's tools
    response_format: Optional[ResponseFormat] = None

    def max_new_tokens(self) -> tuple[Optional[int], str]:
        """The reply's token limit and the field that set it (max_completion_tokens wins, as OpenAI)."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"


class ImageRequest(_Request):
    model_config = _STRICT
    model: str
    prompt: Optional[str] = None  # required by OpenAI; an unconditional model accepts none or an empty one
    n: int = Field(1, ge=1)
    size: Optional[str] = None
    response_format: Literal["b64_json", "url"] = "b64_json"
    user: Optional[str] = None
    quality: Optional[str] = None
    style: Optional[str] = None
    seed: Seed = None  # genloom: the same seed gives the same pixels
    sampler: Optional[str] = None  # genloom: diffusion samplers (ddpm, ddim, ...); a GAN has none
    steps: Optional[int] = Field(None, ge=1)
    guidance: Optional[float] = None
    label: Optional[int] = None  # genloom: a class index for a class-conditional model (or name it in the prompt)


class FineTuningJobRequest(_Request):
    model_config = _CLOSED
    model: str
    training_file: str
    validation_file: Optional[str] = None
    hyperparameters: Optional[dict] = None  # n_epochs is not used: genloom trains by steps (genloom_config)
    suffix: Optional[str] = None
    seed: Optional[int] = None
    genloom_config: dict = Field(default_factory=dict)  # run-config overrides: {"train": {"max_steps": 50}, ...}


class EmbeddingRequest(_Request):
    model_config = _CLOSED
    model: str = "all-MiniLM-L6-v2"
    input: Union[NonEmpty, Annotated[list[NonEmpty], Field(min_length=1)]]
    encoding_format: str = "float"
    user: Optional[str] = None
    dimensions: Optional[int] = None


class ModerationImageUrl(BaseModel):
    model_config = _CLOSED
    url: str  # a data: URL (base64) or the id of an uploaded file (/v1/files); the server fetches nothing


class ModerationPart(BaseModel):
    """omni-moderation's multi-modal input: {"type": "text", "text"} or {"type": "image_url", "image_url": {"url"}}."""
    model_config = _CLOSED
    type: Literal["text", "image_url"]
    text: Optional[str] = None
    image_url: Optional[ModerationImageUrl] = None


class ModerationRequest(_Request):
    model_config = _CLOSED
    input: Union[str, Annotated[list[str], Field(min_length=1)], Annotated[list[ModerationPart], Field(min_length=1)]]
    model: str = "genloom-moderation-2"


class WatermarkDetectRequest(_Request):
    """POST /v1/watermarks/detect (a genloom extension): a text with the model whose tokenizer reads it, or a
    file's bytes (an image or audio) in base64."""
    model_config = _CLOSED
    text: Optional[Annotated[str, Field(min_length=1)]] = None
    model: Optional[str] = None
    file: Optional[Annotated[str, Field(min_length=1)]] = None  # base64

    @model_validator(mode="after")
    def _one_input(self):
        if (self.text is None) == (self.file is None):
            raise PydanticCustomError("one_input", "give either text (with model) or file (base64), not both")
        return self


class WatermarkDetectResponse(BaseModel):
    object: Literal["watermark.detection"] = "watermark.detection"
    kind: str  # text | image | audio
    method: str
    detected: bool
    z: float
    p_value: float
    threshold: float
    details: dict  # tokens scored and green fraction (text), agreement and frame (image), lag and rate (audio)


# ---- responses ----


AIGC_DOC = "GB 45438-2025 implicit label of this output (genloom extension): Label, ContentProducer, ProduceID, ..."


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Optional[str] = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: Optional[Usage] = None
    system_fingerprint: Optional[str] = None
    aigc: Optional[dict] = Field(default=None, description=AIGC_DOC)


class Source(BaseModel):
    """genloom: a passage a grounded reply was given in its prompt, and where it comes from."""

    vector_store_id: str  # the knowledge base's name (vs_... for a store made through the API)
    file_id: str  # the uploaded file's id, or the document's key in a base made by `genloom kb create`
    passage_id: str
    source: str  # the document's file name
    heading: Optional[str] = None
    score: float  # hybrid search: reciprocal rank fusion of BM25 and MiniLM ranks, 1.0 = first in both
    cosine: float  # MiniLM cosine similarity of the passage to the question (the relevance floor's measure)
    text: str


class FileCitation(BaseModel):
    """OpenAI's file citation annotation (Responses API shape): `index` is the source's place in `sources`."""

    type: Literal["file_citation"] = "file_citation"
    file_id: str
    filename: str
    index: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    annotations: Optional[list[FileCitation]] = None  # grounded replies: one per source
    sources: Optional[list[Source]] = None  # genloom: grounded replies' passages ([] when nothing was found)


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Optional[str] = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: Optional[str] = None
    aigc: Optional[dict] = Field(default=None, description=AIGC_DOC)


class Delta(BaseModel):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None
    sources: Optional[list[Source]] = None  # genloom: a grounded reply's first chunk carries its sources


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None = None
    finish_reason: Optional[str] = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChunkChoice]
    usage: Optional[Usage] = None
    system_fingerprint: Optional[str] = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "genloom"
    max_model_len: Optional[int] = None
    genloom: Optional[dict] = None  # family, parameters, context, description (from the model card)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ImageData(BaseModel):
    b64_json: Optional[str] = None
    url: Optional[str] = None
    revised_prompt: Optional[str] = None
    aigc: Optional[dict] = Field(default=None, description=AIGC_DOC)


class ImagesResponse(BaseModel):
    created: int = Field(default_factory=now)
    data: list[ImageData]


class MusicRequest(_Request):
    """POST /v1/audio/music (a genloom extension): a piece from a music model, continuing an optional primer."""

    model_config = _STRICT
    model: str
    primer: Optional[str] = Field(None, description="A MIDI file to continue, base64-encoded")
    primer_file: Optional[str] = Field(None, description="A MIDI file to continue, as the id of an uploaded file "
                                                         "(POST /v1/files with purpose 'music')")
    bars: Optional[int] = Field(None, ge=1, le=MAX_BARS, description="Length of the new music in bars (default 8)")
    seconds: Optional[float] = Field(None, gt=0, le=MAX_SECONDS, description="Length of the new music in seconds")
    tempo: Optional[float] = Field(None, ge=TEMPO_RANGE[0], le=TEMPO_RANGE[1],
                                   description="Quarter notes per minute (default: the primer's, else 100)")
    seed: Seed = None  # the same seed gives the same notes
    temperature: float = Field(1.0, ge=0, le=2)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    min_p: float = Field(0.0, ge=0, lt=1)
    repetition_penalty: float = Field(1.0, gt=0, le=100)
    response_format: Literal["mp3", "wav", "midi", "json"] = "mp3"
    user: Optional[str] = None


class SpeechRequest(_Request):
    """POST /v1/audio/speech in OpenAI's shape; `instructions` is accepted and ignored (the voices take no prompt)."""

    model_config = _CLOSED
    model: str
    input: str = Field(max_length=MAX_INPUT, description=f"The text to speak, at most {MAX_INPUT} characters")
    voice: str = Field(description="A speaker of the voice model (GET /v1/models lists them under genloom.voices)")
    instructions: Optional[str] = Field(None, description="Accepted for OpenAI's clients; genloom voices ignore it")
    response_format: Literal["mp3", "opus", "flac", "wav", "pcm"] = Field(
        "mp3", description="pcm: raw 16-bit little-endian mono samples at the voice's rate (22050 Hz for joe; "
                           "the X-Sample-Rate header says it)")
    speed: float = Field(1.0, ge=SPEED_RANGE[0], le=SPEED_RANGE[1])
    stream_format: Literal["audio", "sse"] = Field(
        "audio", description="audio: the bytes as they are made, sentence by sentence; sse: speech.audio.delta "
                             "events (base64 audio) then speech.audio.done with usage")


class MusicResponse(BaseModel):
    """response_format json: the MIDI, the audio (MP3) and the piano roll (PNG), each base64-encoded."""

    id: str
    object: Literal["audio.music"] = "audio.music"
    created: int = Field(default_factory=now)
    model: str
    seed: int
    tempo: float
    seconds: float  # the whole piece, primer included
    bars: Optional[int] = None
    new_tokens: int
    finish_reason: Literal["length", "token_limit"]
    midi: str
    audio: str
    audio_format: Literal["mp3"] = "mp3"
    piano_roll: str
    aigc: Optional[dict] = Field(default=None, description=AIGC_DOC)


class ProvenanceSection(BaseModel):
    name: str
    found: bool
    summary: str
    details: dict = {}


class ProvenanceResponse(BaseModel):
    """POST /v1/provenance (a genloom extension): what an uploaded file carries."""

    object: Literal["provenance"] = "provenance"
    filename: str
    format: str
    kind: str
    bytes: int
    sections: list[ProvenanceSection]


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: Optional[int] = None
    filename: str
    purpose: str


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]


# ---- vector stores (knowledge bases: genloom.knowledge) ----


class VectorStoreCreate(BaseModel):
    model_config = _CLOSED
    name: Optional[str] = Field(None, max_length=256)
    file_ids: list[str] = Field(default_factory=list, max_length=100)
    metadata: Optional[dict[str, str]] = Field(None, max_length=16)


class VectorStoreFileCounts(BaseModel):
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class VectorStoreObject(BaseModel):
    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str
    usage_bytes: int
    file_counts: VectorStoreFileCounts
    status: Literal["expired", "in_progress", "completed"] = "completed"
    last_active_at: Optional[int] = None
    metadata: dict[str, str] = Field(default_factory=dict)
    expires_after: None = None
    expires_at: None = None


class VectorStoreList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VectorStoreObject]
    first_id: Optional[str] = None
    last_id: Optional[str] = None
    has_more: bool = False


class VectorStoreDeleted(BaseModel):
    id: str
    object: Literal["vector_store.deleted"] = "vector_store.deleted"
    deleted: bool = True


class VectorStoreFileCreate(BaseModel):
    model_config = _CLOSED
    file_id: str = Field(min_length=1, max_length=64)


class VectorStoreFileObject(BaseModel):
    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    usage_bytes: int
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"] = "completed"
    last_error: None = None
    attributes: dict[str, Union[str, float, bool]] = Field(default_factory=dict)


class VectorStoreFileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VectorStoreFileObject]
    first_id: Optional[str] = None
    last_id: Optional[str] = None
    has_more: bool = False


class VectorStoreFileDeleted(BaseModel):
    id: str
    object: Literal["vector_store.file.deleted"] = "vector_store.file.deleted"
    deleted: bool = True


class RankingOptions(BaseModel):
    """OpenAI's rankers ("auto", "default-2024-11-15": hybrid here) and genloom's search modes by name."""

    model_config = _CLOSED
    ranker: Literal["auto", "default-2024-11-15", "none", "hybrid", "bm25", "embeddings"] = "auto"
    score_threshold: float = Field(0.0, ge=0)


class VectorStoreSearchRequest(BaseModel):
    model_config = _CLOSED
    query: Union[str, list[str]]
    max_num_results: int = Field(10, ge=1, le=50)
    ranking_options: Optional[RankingOptions] = None
    rewrite_query: bool = False  # accepted only false: genloom does not rewrite queries
    filters: None = None  # attribute filters are not supported


class SearchContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class VectorStoreSearchResult(BaseModel):
    file_id: str
    filename: str
    score: float
    attributes: dict[str, Union[str, float, bool]] = Field(default_factory=dict)
    content: list[SearchContent]


class VectorStoreSearchPage(BaseModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[VectorStoreSearchResult]
    has_more: bool = False
    next_page: Optional[str] = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    model: str
    status: str
    created_at: Optional[int] = None
    finished_at: Optional[int] = None
    fine_tuned_model: Optional[str] = None
    training_file: Optional[str] = None
    hyperparameters: dict = Field(default_factory=dict)
    error: Optional[dict] = None
    genloom_progress: Optional[str] = None  # "step 40/50, loss 1.2345"


class FineTuningJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool = False


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: Optional[int] = None
    level: str
    message: str
    data: dict = Field(default_factory=dict)
    type: Literal["message", "metrics"] = "message"


class FineTuningJobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool = False


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]  # base64: little-endian float32 bytes


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[dict]  # flagged, categories, category_scores, category_applied_input_types (genloom.safety.moderation)


class HistoryItem(BaseModel):
    id: str
    route: str
    model: str
    params: dict
    output: dict
    usage: dict
    latency_ms: int
    created_at: str


class HistoryList(BaseModel):
    data: list[HistoryItem]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorInfo
