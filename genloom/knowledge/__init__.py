"""Knowledge bases: documents split into passages, indexed with MiniLM embeddings and BM25, searched hybrid.

    kbs = KnowledgeBases("genloom-data/kb")
    kbs.update("docs", read_source("handbook/"), drop_missing=True)   # create, or re-embed only what changed
    for hit in kbs.search("docs", "how do I reset my password?", k=5):  # mode="hybrid" | "bm25" | "embeddings"
        hit.passage.text, hit.passage.source, hit.passage.heading, hit.score, hit.cosine
"""

from genloom.knowledge.documents import KINDS, MAX_CHARS, SUFFIXES, Document, Passage, read_file, read_source, split
from genloom.knowledge.store import (
    MODES,
    Change,
    Hit,
    KnowledgeBase,
    KnowledgeBases,
    check_name,
    read_manifest,
    update,
)

__all__ = ["KINDS", "MAX_CHARS", "MODES", "SUFFIXES", "Change", "Document", "Hit", "KnowledgeBase", "KnowledgeBases",
           "Passage", "check_name", "read_file", "read_manifest", "read_source", "split", "update"]
