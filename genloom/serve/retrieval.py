"""Grounded chat: which knowledge bases a served model answers from, and the passages retrieved for a question.

A chat model answers from a knowledge base when `genloom serve --kb MODEL=KB` names one, when its folder holds a
`grounding.json` (`{"kb": "support", "k": 3, "passage_chars": 240, "min_cosine": 0.35}`, every key optional: the
model's own retrieval settings, and the base it answers from by default), or when a request carries a
`file_search` tool naming vector stores. KB is a base's name under the data directory's kb/ folder (what
`genloom kb create` and /v1/vector_stores make) or the path of a knowledge-base folder (for grounding.json,
relative to the model folder; a bundled corpus's name, e.g. `chatterbot`, that no base holds yet is built into the
data directory's kb/ from the corpus in the background once the model serves; its grounded requests get a 503
meanwhile). Retrieval is hybrid search (BM25 + MiniLM); a passage counts only when its
MiniLM cosine to the question reaches `min_cosine`, and with none the server answers `NOT_FOUND`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from genloom.errors import GenloomError, choices
from genloom.knowledge import Hit, KnowledgeBases, check_name, read_source
from genloom.knowledge.documents import CORPORA
from genloom.knowledge.grounding import Grounding

GROUNDING_FILE = "grounding.json"


@dataclass(frozen=True)
class KbRef:
    """A knowledge base the server can search: the collection it lives in and its name there."""

    kbs: KnowledgeBases
    name: str

    def __str__(self) -> str:
        return str(self.kbs.root / self.name)


@dataclass(frozen=True)
class Source:
    """One passage a reply was grounded in, and where it came from."""

    hit: Hit
    store_id: str  # the vector store id, i.e. the knowledge base's name
    file_id: str  # the uploaded file's id (/v1/files), else the document's key in the base


def resolve_kb(ref: str, *, kbs: KnowledgeBases | None, base: Path | None = None) -> KbRef:
    """A base's name in `kbs` (the data directory's kb/), else a knowledge-base folder (relative to `base`)."""
    if kbs is not None and kbs.exists(ref):
        return KbRef(kbs, ref)
    path = Path(ref).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if (path / "manifest.json").is_file():
        path = path.resolve()
        check_name(path.name)
        return KbRef(KnowledgeBases(path.parent), path.name)
    known = kbs.names() if kbs is not None else []
    where = f"no knowledge base named '{ref}' in {kbs.root}" if kbs is not None else f"no knowledge base '{ref}'"
    raise GenloomError(f"{where} and no knowledge-base folder at {path}; "
                       + (f"choose one of {choices(known)} or " if known else "")
                       + "create one with `genloom kb create NAME --from FOLDER`")


def resolve_model_kb(ref: str, *, kbs: KnowledgeBases | None, base: Path | None = None) -> KbRef | None:
    """grounding.json's base: as resolve_kb, but None for a bundled corpus's name (CORPORA: chatterbot, ...) that
    neither `kbs` nor a folder holds yet: build_corpus_kb builds it (the server does so in the background)."""
    try:
        return resolve_kb(ref, kbs=kbs, base=base)
    except GenloomError:
        if kbs is None or ref not in CORPORA:
            raise
    return None


def build_corpus_kb(ref: str, kbs: KnowledgeBases) -> KbRef:
    """Build the base of bundled corpus `ref` into `kbs` (embedding it: a minute or more on a busy machine)."""
    kbs.update(ref, read_source(ref))
    return KbRef(kbs, ref)


def load_grounding(folder: Path) -> tuple[Grounding, str | None]:
    """A model folder's grounding.json: its retrieval settings (the defaults where absent) and default base."""
    path = Path(folder) / GROUNDING_FILE
    if not path.is_file():
        return Grounding(), None
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GenloomError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise GenloomError(f"{path} must hold a JSON object")
    allowed = ["kb", *(f.name for f in fields(Grounding))]
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise GenloomError(f"{path}: unknown keys {unknown}; choose from {choices(allowed)}")
    kb = spec.pop("kb", None)
    if kb is not None and (not isinstance(kb, str) or not kb):
        raise GenloomError(f"{path}: 'kb' must be a knowledge base's name or folder")
    types = {"k": int, "passage_chars": int, "min_cosine": (int, float)}
    for key, value in spec.items():
        if isinstance(value, bool) or not isinstance(value, types[key]):
            raise GenloomError(f"{path}: '{key}' must be a number (got {value!r})")
    try:
        return Grounding(**spec).check(), kb
    except ValueError as e:
        raise GenloomError(f"{path}: {e}") from None


def retrieve(refs: list[KbRef], question: str, grounding: Grounding) -> list[Source]:
    """The passages of `refs` that answer `question`: hybrid search in each base, those whose cosine reaches
    `grounding.min_cosine`, best first (by hybrid score, then cosine), at most `grounding.k`. Runs in a thread."""
    found: list[Source] = []
    for ref in refs:
        kb = ref.kbs.get(ref.name)
        for hit in kb.search(question, k=grounding.k, mode="hybrid"):
            if hit.cosine is not None and hit.cosine >= grounding.min_cosine:
                doc = kb.documents.get(hit.passage.doc, {})
                found.append(Source(hit, ref.name, doc.get("meta", {}).get("file_id", hit.passage.doc)))
    found.sort(key=lambda s: (-s.hit.score, -(s.hit.cosine or 0.0)))
    return found[: grounding.k]
