"""Knowledge bases on disk: passages, their MiniLM embeddings in a FAISS index, a BM25 index, and hybrid search.

A knowledge base is a folder (default `genloom-data/kb/NAME`):
    manifest.json        {"format": "genloom-kb", name, documents {key: sha256, source, kind, passages, meta}, ...,
                          "generation": the folder below that holds the current index}; written last, atomically
    gNNNNNN/passages.jsonl   one passage a line: id, doc, source, heading, start, end, text
    gNNNNNN/embeddings.npy   (N, 384) float32, unit length, row i = passage i (np.load with allow_pickle=False)
    gNNNNNN/bm25/            bm25s' own files (JSON vocabulary and parameters, .npy score matrix, no pickle)
An update writes a whole new generation folder, then swaps the manifest to it and deletes the old one, so a
reader sees the old index or the new one, never half of each; writers take a lock file. Documents are kept by
content hash: an update re-embeds only the documents that are new or changed, and drops removed ones.

Search: dense (exact inner product over the unit embeddings, i.e. cosine, with FAISS IndexFlatIP), sparse
(Okapi BM25, Robertson & Zaragoza 2009, as bm25s computes it; English stop words removed, Snowball
stemming by PyStemmer), or hybrid:
reciprocal rank fusion of both lists (Cormack, Clarke & Buettcher 2009, k = 60). Exact search is the right
index up to about a million passages (a 10k-passage base answers in well under a millisecond).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import bm25s
import faiss
import numpy as np
import Stemmer

from genloom.embeddings import MODEL_NAME, embed
from genloom.errors import GenloomError, choices
from genloom.files import atomic_write_text, locked
from genloom.knowledge.documents import Document, Passage, split

FORMAT = "genloom-kb"
MODES = ("hybrid", "bm25", "embeddings")
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al. 2009)
FUSION_DEPTH = 50  # how far down each list hybrid search looks
MAX_QUERY_CHARS = 4000
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DIM = 384


@dataclass(frozen=True)
class Hit:
    """A passage found by a search: its rank (1 = best), the mode's score, and both raw signals where known.

    score: cosine for "embeddings", BM25 for "bm25", for "hybrid" the RRF sum divided by its maximum 2/(k+1)
    (1.0 = ranked first by both). cosine is the query-passage cosine similarity (None in bm25 mode), the signal
    to threshold on for "nothing relevant was found"."""

    passage: Passage
    rank: int
    score: float
    cosine: float | None
    bm25: float | None


@dataclass
class Change:
    """What an update did: document keys added, changed, kept as they were, removed; passages embedded."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    embedded: int = 0
    passages: int = 0

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.changed)} changed, {len(self.unchanged)} unchanged, "
                f"{len(self.removed)} removed; {self.embedded} passages embedded, {self.passages} in all")


def check_name(name: str) -> str:
    """A knowledge base's name is its folder's name: letters, digits, '.', '_', '-', never a path."""
    if not isinstance(name, str) or not NAME.match(name) or name in (".", ".."):
        raise GenloomError(f"invalid knowledge base name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    return name


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / "manifest.json"
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GenloomError(f"no knowledge base in {folder}") from None
    except (OSError, ValueError) as e:
        raise GenloomError(f"unreadable knowledge base manifest {path}: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise GenloomError(f"{path} is not a genloom knowledge base manifest")
    return m


class KnowledgeBase:
    """One loaded generation of a knowledge base: its passages, a FAISS index of their embeddings, BM25."""

    def __init__(self, folder: Path, manifest: dict, passages: list[Passage], vectors: np.ndarray, bm25):
        self.folder, self.manifest, self.passages, self.vectors, self._bm25 = folder, manifest, passages, vectors, bm25
        self._index = faiss.IndexFlatIP(DIM)
        if len(vectors):
            self._index.add(vectors)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def generation(self) -> str:
        return self.manifest["generation"]

    @property
    def documents(self) -> dict[str, dict]:
        return self.manifest["documents"]

    @classmethod
    def open(cls, folder: str | Path) -> KnowledgeBase:
        """Load the current generation (retrying once if an update swapped it while reading)."""
        folder = Path(folder)
        for attempt in (0, 1):
            manifest = read_manifest(folder)
            gen = folder / manifest["generation"]
            try:
                passages = [Passage.from_json(json.loads(line)) for line in
                            (gen / "passages.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
                vectors = np.load(gen / "embeddings.npy", allow_pickle=False).astype(np.float32, copy=False)
                bm25 = bm25s.BM25.load(str(gen / "bm25"), mmap=False, allow_pickle=False) if passages else None
            except FileNotFoundError:
                if attempt == 0:
                    continue
                raise GenloomError(f"knowledge base {folder} is incomplete: {gen} is missing files") from None
            if vectors.shape != (len(passages), DIM):
                raise GenloomError(f"knowledge base {folder}: {len(passages)} passages but embeddings of shape "
                                   f"{vectors.shape}")
            return cls(folder, manifest, passages, vectors, bm25)
        raise AssertionError("unreachable")

    def search(self, query: str, k: int = 5, mode: str = "hybrid", vector: np.ndarray | None = None) -> list[Hit]:
        """The k passages that best match `query`, best first (fewer when the base is smaller). `vector`: the
        query's unit MiniLM embedding when the caller has it already (many queries embedded in one batch)."""
        if mode not in MODES:
            raise GenloomError(f"unknown search mode '{mode}'; choose one of {choices(MODES)}")
        if not isinstance(query, str) or not query.strip():
            raise GenloomError("the query is empty: ask something")
        if len(query) > MAX_QUERY_CHARS:
            raise GenloomError(f"the query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}")
        if not isinstance(k, int) or k < 1:
            raise GenloomError(f"k must be a positive number of passages, got {k!r}")
        n = len(self.passages)
        if n == 0:
            return []
        depth = min(n, k if mode != "hybrid" else max(k, FUSION_DEPTH))
        bm25 = qv = None
        dense: list[int] = []
        sparse: list[int] = []
        if mode != "embeddings":
            bm25 = self._bm25_scores(query)
            top = np.argsort(-bm25, kind="stable")[:depth]
            sparse = [int(i) for i in top if bm25[i] > 0]
        if mode != "bm25":
            qv = embed([query])[0] if vector is None else np.asarray(vector, dtype=np.float32)
            _, idx = self._index.search(qv[None, :], depth)
            dense = [int(i) for i in idx[0] if i >= 0]
        if mode == "hybrid":
            fused: dict[int, float] = {}
            for ranking in (dense, sparse):
                for r, i in enumerate(ranking, 1):
                    fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + r)
            order = sorted(fused, key=lambda i: (-fused[i], i))[:k]
            scores = {i: fused[i] * (RRF_K + 1) / 2 for i in order}
        else:
            order = (dense or sparse)[:k]
            scores = {i: float(self.vectors[i] @ qv) if qv is not None else float(bm25[i]) for i in order}
        return [Hit(passage=self.passages[i], rank=r, score=float(scores[i]),
                    cosine=None if qv is None else float(self.vectors[i] @ qv),
                    bm25=None if bm25 is None else float(bm25[i])) for r, i in enumerate(order, 1)]

    def _bm25_scores(self, query: str) -> np.ndarray:
        tokens = [t for t in _tokenize([query])[0] if t in self._bm25.vocab_dict]
        if not tokens:
            return np.zeros(len(self.passages), dtype=np.float32)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)


def _tokenize(texts: list[str]) -> list[list[str]]:
    """bm25s' word tokens, lower-cased, English stop words out, Snowball-stemmed (a Stemmer is not thread-safe:
    one per call)."""
    return bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False,
                          show_progress=False)


# ---- writing ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(folder: Path):
    """One writer at a time per knowledge base (the server and the CLI alike): an exclusive lock file."""
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / ".lock"):
        yield


def update(folder: str | Path, documents: list[Document], *, drop_missing: bool = False, remove: list[str] = (),
           title: str | None = None, meta: dict | None = None, doc_meta: dict[str, dict] | None = None) -> Change:
    """Create or update the knowledge base in `folder` with `documents` (keyed by Document.key).

    A document whose key and content hash are already there keeps its passages and embeddings; new and changed
    ones are split and embedded (in one batch); with `drop_missing` the documents not in `documents` go, and the
    keys in `remove` go in any case. `title` names the base (default: its folder's name), `meta` updates the base's metadata, `doc_meta` that of the documents named.
    Returns what changed; the new index is on disk, swapped in atomically, when it returns."""
    folder = Path(folder)
    keys = [d.key for d in documents]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise GenloomError(f"two documents with the same key {dup}")
    with _locked(folder):
        old = KnowledgeBase.open(folder) if (folder / "manifest.json").exists() else None
        old_docs = old.documents if old else {}
        change = Change()
        wanted = {d.key: d for d in documents}
        kept_keys = [k for k in old_docs if k not in remove and (k in wanted or not drop_missing)]
        change.removed = [k for k in old_docs if k not in kept_keys]
        passages: list[Passage] = []
        rows: list[np.ndarray] = []
        fresh: list[int] = []  # positions in `passages` still to embed
        docs_out: dict[str, dict] = {}
        by_doc: dict[str, list[int]] = {}
        if old:
            for i, p in enumerate(old.passages):
                by_doc.setdefault(p.doc, []).append(i)
        for key in sorted(set(kept_keys) | set(wanted)):
            doc = wanted.get(key)
            prev = old_docs.get(key)
            entry = dict(prev) if prev else {}
            if doc is not None and (prev is None or prev["sha256"] != doc.sha256):
                (change.changed if prev else change.added).append(key)
                new = split(doc)
                fresh += range(len(passages), len(passages) + len(new))
                passages += new
                rows += [np.zeros(DIM, np.float32)] * len(new)
                entry.update(sha256=doc.sha256, source=doc.source, kind=doc.kind, chars=len(doc.text),
                             passages=len(new), updated_at=_now())
            else:
                change.unchanged.append(key)
                for i in by_doc.get(key, []):
                    passages.append(old.passages[i])
                    rows.append(old.vectors[i])
            entry["meta"] = {**entry.get("meta", {}), **(doc_meta or {}).get(key, {})}
            docs_out[key] = entry
        vectors = np.stack(rows).astype(np.float32) if rows else np.zeros((0, DIM), np.float32)
        if fresh:
            vectors[fresh] = embed([passages[i].indexed_text() for i in fresh])
        change.embedded, change.passages = len(fresh), len(passages)
        manifest = dict(old.manifest) if old else {"format": FORMAT, "version": 1, "created_at": _now(), "meta": {}}
        manifest.update(name=title or manifest.get("name") or folder.name, embedding_model=MODEL_NAME, dim=DIM,
                        documents=docs_out, passages=len(passages), updated_at=_now(),
                        chars=sum(d.get("chars", 0) for d in docs_out.values()),
                        meta={**manifest.get("meta", {}), **(meta or {})})
        _write_generation(folder, manifest, passages, vectors)
    return change


def _write_generation(folder: Path, manifest: dict, passages: list[Passage], vectors: np.ndarray) -> None:
    """Write a new generation folder whole, fsync it, point the manifest at it, then delete the older ones."""
    gens = [int(p.name[1:]) for p in folder.glob("g[0-9]*") if p.name[1:].isdigit()]
    gen = f"g{max(gens, default=0) + 1:06d}"
    tmp = folder / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with open(tmp / "passages.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in passages)
        np.save(tmp / "embeddings.npy", vectors, allow_pickle=False)
        if passages:
            retriever = bm25s.BM25()
            retriever.index(_tokenize([p.indexed_text() for p in passages]), show_progress=False)
            retriever.save(str(tmp / "bm25"), allow_pickle=False)
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        os.replace(tmp, folder / gen)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(folder / "manifest.json", json.dumps({**manifest, "generation": gen}, indent=1,
                                                           ensure_ascii=False))
    for p in folder.iterdir():
        if p.is_dir() and p.name != gen and (p.name.startswith(".tmp-") or re.fullmatch(r"g\d+", p.name)):
            shutil.rmtree(p, ignore_errors=True)


def _now() -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp())


# ---- many knowledge bases under one root ------------------------------------------------------------------------


class KnowledgeBases:
    """The knowledge bases under one folder (`genloom-data/kb` by default), by name, loaded once and reloaded
    when their manifest changes on disk (by any process); safe to share between threads."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._loaded: dict[str, KnowledgeBase] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def exists(self, name: str) -> bool:
        return NAME.match(name or "") is not None and (self.root / name / "manifest.json").is_file()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if NAME.match(p.name) and (p / "manifest.json").is_file())

    def manifest(self, name: str) -> dict:
        self.require(name)
        return read_manifest(self.path(name))

    def require(self, name: str) -> Path:
        """The folder of an existing base, or an error naming those there are."""
        check_name(name)
        if not self.exists(name):
            known = self.names()
            raise GenloomError(f"no knowledge base '{name}' in {self.root}; "
                               + (f"choose one of {choices(known)}" if known else "create one with `genloom kb create`"))
        return self.path(name)

    def get(self, name: str) -> KnowledgeBase:
        """The loaded base, reloaded whenever its manifest on disk differs from the one in memory: an update or
        a delete and re-create by any process (another server replica on the same data directory, the CLI)."""
        folder = self.require(name)
        manifest = read_manifest(folder)
        with self._lock:
            kb = self._loaded.get(name)
        if kb is None or kb.manifest != manifest:  # not the generation alone: a re-created base starts at g000001
            kb = KnowledgeBase.open(folder)
            with self._lock:
                self._loaded[name] = kb
        return kb

    def search(self, name: str, query: str, k: int = 5, mode: str = "hybrid") -> list[Hit]:
        return self.get(name).search(query, k=k, mode=mode)

    def update(self, name: str, documents: list[Document], **kw) -> Change:
        return update(self.path(name), documents, **kw)

    def delete(self, name: str) -> None:
        folder = self.require(name)
        with _locked(folder):
            (folder / "manifest.json").unlink()
        shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            self._loaded.pop(name, None)
