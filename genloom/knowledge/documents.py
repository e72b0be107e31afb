"""Documents -> passages for a knowledge base.

Markdown is split at its headings (outside code fences), each section then by size at paragraph breaks;
plain text at paragraph breaks, packed up to MAX_CHARS; JSONL holds one passage per line ({"question",
"answer"} pairs, or {"text"}); a named corpus of genloom.data (the chatterbot dialogues, ...) gives one
passage per corpus document (split by size only when longer than MAX_CHARS). Every passage keeps its
document, its character offsets in it and its heading path, for citations.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from genloom.data.text import CORPORA
from genloom.errors import GenloomError, choices

MAX_CHARS = 1000  # about 250 word pieces: what all-MiniLM-L6-v2 reads of a passage (it truncates at 256)
SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text", ".jsonl": "jsonl"}
KINDS = ("markdown", "text", "jsonl", "corpus")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_HEADING_LINE = re.compile(r"\A[ \t]*#{1,6}[ \t]+[^\n]*\n*")  # a section's heading line, at its start
_SYNOPSIS = re.compile(r"^`[^`\n]+`: ", re.M)  # an option section's synopsis (genloom.knowledge.manpages)
_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CORPUS_SEP = "\n\f\n"  # between the documents of a named corpus (a form feed on its own line)


@dataclass(frozen=True)
class Document:
    """One file (or named corpus) of a knowledge base; `key` is unique in the base, `sha256` its content's hash."""

    key: str
    kind: str  # one of KINDS
    text: str
    source: str  # shown in citations: a file name or path, or the corpus name
    sha256: str

    @classmethod
    def from_text(cls, key: str, kind: str, text: str, source: str | None = None) -> Document:
        if kind not in KINDS:
            raise GenloomError(f"unknown document kind '{kind}'; choose one of {choices(KINDS)}")
        return cls(key=key, kind=kind, text=text, source=source or key,
                   sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())


@dataclass(frozen=True)
class Passage:
    """A retrievable piece of a document: text[start:end] of it (for JSONL, the line), under `heading`."""

    id: str
    doc: str  # the document's key
    source: str
    heading: str | None
    start: int
    end: int
    text: str

    def prompt_text(self) -> str:
        """What a grounded prompt shows of it (genloom.knowledge.grounding): the answer after a `Bot:`, the layout the
        grounded starter learnt to copy from (its training passages are dialogues and man-page option sections).

        A question/answer pair of a JSONL file is the one-turn dialogue it is, `User: question Bot: answer`; a
        passage already in a learnt layout (a dialogue, or an option section `` `cmd -x`: ... `` as
        genloom.knowledge.manpages writes it) stays as it is; any other passage is a reply to its heading,
        `User: heading Bot: text` (the heading line taken out of the text), or `Bot: text` when it has none."""
        if self.heading and SUFFIXES.get(Path(self.source).suffix.lower()) == "jsonl":
            return f"User: {self.heading} Bot: {self.text}"
        if "Bot: " in self.text or _SYNOPSIS.search(self.text):
            return self.text
        body = _HEADING_LINE.sub("", self.text, count=1).strip()
        if not body:
            return self.text
        return f"User: {self.heading.split(' > ')[-1]} Bot: {body}" if self.heading else f"Bot: {body}"

    def indexed_text(self) -> str:
        """What the embeddings and BM25 see: the heading path (or a JSONL question) above the text."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> Passage:
        return cls(**{k: row.get(k) for k in cls.__dataclass_fields__})


# ---- reading ----------------------------------------------------------------------------------------------------


def read_source(source: str | Path) -> list[Document]:
    """A corpus name (chatterbot, ...), a Markdown/text/JSONL file, or a folder of them -> documents.

    In a folder, files of other types and hidden files are skipped; a named file of another type, an empty
    or non-UTF-8 document, or a folder with no document is an error naming the valid choices."""
    name = str(source)
    if name in CORPORA and not Path(name).exists():
        return [read_corpus(name)]
    path = Path(source)
    if not path.exists():
        raise GenloomError(f"no file or folder '{name}': give a {_types()} file, a folder of them, or a corpus "
                           f"name ({choices(CORPORA)})")
    if path.is_file():
        return [read_file(path, path.name)]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise GenloomError(f"no documents in folder '{name}': it holds no {_types()} files")
    return [read_file(p, p.relative_to(path).as_posix()) for p in files]


def read_corpus(name: str) -> Document:
    """A corpus of genloom.data by name as one document: its documents joined by _CORPUS_SEP, a passage each."""
    if name not in CORPORA:
        raise GenloomError(f"unknown corpus '{name}'; choose one of {choices(CORPORA)}")
    docs = [d.strip() for d in CORPORA[name]() if d.strip()]
    if not docs:
        raise GenloomError(f"corpus '{name}' is empty")
    return Document.from_text(name, "corpus", _CORPUS_SEP.join(docs), source=name)


def read_file(path: Path, key: str, source: str | None = None) -> Document:
    """One file as a document of the kind its suffix says; empty, unreadable or other types are errors."""
    kind = SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise GenloomError(f"cannot read '{path}': unsupported file type '{Path(path).suffix or '(none)'}'; "
                           f"use one of {_types()}")
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise GenloomError(f"cannot read '{path}': it is not UTF-8 text") from None
    except OSError as e:
        raise GenloomError(f"cannot read '{path}': {e.strerror}") from None
    if not text.strip():
        raise GenloomError(f"document '{path}' is empty: nothing to index")
    doc = Document.from_text(key, kind, text, source=source or key)
    split(doc)  # a malformed JSONL line fails here, before anything is written
    return doc


def _types() -> str:
    return "/".join(sorted(SUFFIXES))


# ---- splitting --------------------------------------------------------------------------------------------------


def split(doc: Document, max_chars: int = MAX_CHARS) -> list[Passage]:
    """The passages of a document, in order, with ids stable while the document (key and content) is unchanged."""
    if doc.kind == "markdown":
        spans = [(s, e, h) for hs, he, h in _sections(doc.text) for s, e in _pack(doc.text, hs, he, max_chars)]
    elif doc.kind == "text":
        spans = [(s, e, None) for s, e in _pack(doc.text, 0, len(doc.text), max_chars)]
    elif doc.kind == "corpus":
        blocks = _blocks(doc.text, 0, len(doc.text), re.compile(re.escape(_CORPUS_SEP)))
        spans = [(s, e, None) for bs, be in blocks for s, e in _pack(doc.text, bs, be, max_chars, joined=False)]
    else:
        return _jsonl_passages(doc)
    stem = hashlib.sha256(f"{doc.key}\0{doc.sha256}".encode()).hexdigest()[:12]
    return [Passage(id=f"{stem}-{i}", doc=doc.key, source=doc.source, heading=h, start=s, end=e, text=doc.text[s:e])
            for i, (s, e, h) in enumerate(spans)]


def _sections(text: str) -> list[tuple[int, int, str | None]]:
    """(start, end, heading path 'A > B') of each Markdown section; headings inside code fences do not count."""
    out, stack, start, fence, pos = [], [], 0, None, 0
    heading = None
    for line in text.splitlines(keepends=True):
        m = _FENCE.match(line)
        if m and (fence is None or m.group(1)[0] == fence):
            fence = None if fence else m.group(1)[0]
        h = _HEADING.match(line.rstrip("\n")) if fence is None else None
        if h:
            if text[start:pos].strip():
                out.append((start, pos, heading))
            level = len(h.group(1))
            stack = [(lv, t) for lv, t in stack if lv < level] + [(level, h.group(2).strip())]
            heading, start = " > ".join(t for _, t in stack), pos
        pos += len(line)
    if text[start:].strip():
        out.append((start, len(text), heading))
    return out


def _trim(text: str, s: int, e: int) -> tuple[int, int]:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


def _pack(text: str, start: int, end: int, max_chars: int, joined: bool = True) -> list[tuple[int, int]]:
    """Spans of text[start:end]: paragraphs packed together up to max_chars (when `joined`), longer ones cut at
    sentence ends, failing that at spaces, failing that anywhere."""
    paras = [_trim(text, s, e) for s, e in _blocks(text, start, end, _PARAGRAPH_BREAK)] if joined \
        else [_trim(text, start, end)]
    pieces = [p for s, e in paras if e > s for p in _cut(text, s, e, max_chars)]
    out: list[tuple[int, int]] = []
    for s, e in pieces:
        if out and joined and e - out[-1][0] <= max_chars:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _blocks(text: str, start: int, end: int, pattern: re.Pattern) -> list[tuple[int, int]]:
    out, s = [], start
    for m in pattern.finditer(text, start, end):
        out.append((s, m.start()))
        s = m.end()
    out.append((s, end))
    return out


def _cut(text: str, s: int, e: int, max_chars: int) -> list[tuple[int, int]]:
    out = []
    while e - s > max_chars:
        window = text[s:s + max_chars]
        cut = max((m.start() for m in _SENTENCE_END.finditer(window)), default=0) or window.rfind(" ")
        cut = cut if cut > max_chars // 4 else max_chars
        out.append(_trim(text, s, s + cut))
        s = _trim(text, s + cut, e)[0]
    if e > s:
        out.append((s, e))
    return out


def _jsonl_passages(doc: Document) -> list[Passage]:
    """One passage per line: {"question", "answer"} (the question is its heading) or {"text"}."""
    stem = hashlib.sha256(f"{doc.key}\0{doc.sha256}".encode()).hexdigest()[:12]
    out, pos = [], 0
    for n, line in enumerate(doc.text.splitlines(keepends=True), 1):
        s, e = _trim(doc.text, pos, pos + len(line))
        pos += len(line)
        if s == e:
            continue
        try:
            row = json.loads(doc.text[s:e])
        except json.JSONDecodeError:
            raise GenloomError(f"{doc.source}:{n}: not valid JSON") from None
        q, a, t = (row.get(f) if isinstance(row, dict) else None for f in ("question", "answer", "text"))
        if isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip():
            heading, body = q.strip(), a.strip()
        elif isinstance(t, str) and t.strip():
            heading, body = None, t.strip()
        else:
            raise GenloomError(f"{doc.source}:{n}: expected a JSON object with non-empty string fields "
                               "\"question\" and \"answer\" (or \"text\")")
        out.append(Passage(id=f"{stem}-{len(out)}", doc=doc.key, source=doc.source, heading=heading, start=s, end=e,
                           text=body))
    return out
