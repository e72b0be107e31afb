"""Every request and response schema of the OpenAI-compatible API, in OpenAI's shapes (vLLM's `protocol.py`).

Text requests are strict: wrong types are not coerced ("5" is not an int) and fields OpenAI would reject are
errors, so a client learns about a typo instead of getting silently ignored options. Fields OpenAI knows
but genloom cannot honour (logprobs, logit_bias, tools, ...) are accepted at their neutral value only.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from genloom.sample import SamplingParams

_STRICT = ConfigDict(extra="forbid", strict=True)
_CLOSED = ConfigDict(extra="forbid")  # unknown fields are errors; "5" may still stand for 5


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class _SamplingRequest(BaseModel):
    """The sampling fields the two generation endpoints share."""

    model_config = _STRICT

    model: str
    max_tokens: Optional[int] = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    logit_bias: Optional[dict[str, float]] = None  # accepted only empty: genloom has no logit bias
    # vLLM's sampling extensions (the openai client sends them in extra_body)
    min_tokens: Optional[int] = Field(None, ge=0)  # no end-of-text or stop string before this many tokens
    top_k: int = Field(0, ge=-1)  # keep the k likeliest tokens; 0 or -1: off
    min_p: float = Field(0.0, ge=0, lt=1)  # drop tokens below min_p times the top probability (Nguyen et al. 2024)
    repetition_penalty: float = Field(1.0, gt=0)  # CTRL's (Keskar et al. 2019); 1: off

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


class CompletionRequest(_SamplingRequest):
    # a string, a list of strings, token ids, or a list of token-id lists (OpenAI's four prompt forms)
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = 16  # OpenAI's default for /v1/completions
    echo: bool = False
    logprobs: Optional[int] = None  # accepted only as null/0
    best_of: Optional[int] = None  # accepted only when equal to n
    suffix: Optional[str] = None  # accepted only as null

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


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = None  # OpenAI's newer name for max_tokens
    logprobs: Optional[bool] = None  # accepted only as null/false
    top_logprobs: Optional[int] = None
    parallel_tool_calls: Optional[bool] = None
    tools: Optional[list[dict]] = None  # accepted only empty: genloom models have no tool calling
    tool_choice: Optional[Union[str, dict]] = None
    response_format: Optional[dict] = None  # accepted only as {"type": "text"}

    def max_new_tokens(self) -> tuple[Optional[int], str]:
        """The reply's token limit and the field that set it (max_completion_tokens wins, as OpenAI)."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"


class ImageRequest(BaseModel):
    model_config = _CLOSED
    model: str
    prompt: Optional[str] = None  # required by OpenAI; an unconditional model accepts none or an empty one
    n: int = Field(1, ge=1)
    size: Optional[str] = None
    response_format: Literal["b64_json", "url"] = "b64_json"
    user: Optional[str] = None
    quality: Optional[str] = None
    style: Optional[str] = None
    seed: Optional[int] = None  # genloom: the same seed gives the same pixels
    sampler: Optional[str] = None  # genloom: diffusion samplers (ddpm, ddim, ...); a GAN has none
    steps: Optional[int] = Field(None, ge=1)
    guidance: Optional[float] = None
    label: Optional[int] = None  # genloom: a class index for a class-conditional model (or name it in the prompt)


class FineTuningJobRequest(BaseModel):
    model_config = _CLOSED
    model: str
    training_file: str
    validation_file: Optional[str] = None
    hyperparameters: Optional[dict] = None  # n_epochs is not used: genloom trains by steps (genloom_config)
    suffix: Optional[str] = None
    seed: Optional[int] = None
    genloom_config: dict = Field(default_factory=dict)  # run-config overrides: {"train": {"max_steps": 50}, ...}


class EmbeddingRequest(BaseModel):
    model_config = _CLOSED
    model: str = "all-MiniLM-L6-v2"
    input: Union[str, list[str]]
    encoding_format: str = "float"
    user: Optional[str] = None
    dimensions: Optional[int] = None


class ModerationRequest(BaseModel):
    model_config = _CLOSED
    input: Union[str, list[str]]
    model: str = "genloom-moderation-1"


# ---- responses ----


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


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


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


class Delta(BaseModel):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None


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


class ImagesResponse(BaseModel):
    created: int = Field(default_factory=now)
    data: list[ImageData]


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
    results: list[dict]  # flagged, categories, category_scores (genloom.safety.moderation)


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
