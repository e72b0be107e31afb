"""POST /v1/embeddings: all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), computed offline."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter

from genloom.embeddings import embed, token_counts
from genloom.serve.errors import ApiError
from genloom.serve.protocol import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from genloom.serve.routes.deps import v1

router = APIRouter()
MODEL = "all-MiniLM-L6-v2"


@router.post("/v1/embeddings", dependencies=v1)
async def embeddings(body: EmbeddingRequest) -> EmbeddingList:
    if body.model not in (MODEL, "text-embedding-minilm"):
        raise ApiError(404, f"The embedding model '{body.model}' does not exist; choose {MODEL}.",
                       param="model", code="model_not_found")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or any(not t for t in texts):
        raise ApiError(400, "input must be a non-empty string or a list of non-empty strings.", param="input")
    if body.encoding_format not in ("float", "base64"):
        raise ApiError(400, "encoding_format must be 'float' or 'base64'.", param="encoding_format")
    if body.dimensions not in (None, 384):
        raise ApiError(400, f"{MODEL} has 384 dimensions.", param="dimensions")
    vecs, counts = await asyncio.to_thread(lambda: (embed(texts), token_counts(texts)))
    tokens = sum(counts)  # the model's own tokens, as OpenAI counts usage
    return EmbeddingList(model=MODEL, data=[Embedding(index=i, embedding=_encode(v, body.encoding_format))
                                            for i, v in enumerate(vecs)],
                         usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))


def _encode(v, fmt: str):
    """float: a JSON list; base64: little-endian float32 bytes (what the openai client asks for and decodes)."""
    return v.tolist() if fmt == "float" else base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()
