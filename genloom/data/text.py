"""Text corpora -> documents -> deterministic train/validation split -> token files.

A prepared folder holds train.bin and val.bin (flat token ids, uint16 or uint32, read with np.memmap),
tokenizer.json and meta.json. Documents are split, not tokens, so no document straddles the split; a source
with too few documents for the validation fraction (one short file) is split by paragraphs or, failing that,
lines (meta.json says which).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from genloom.data import music, speech
from genloom.data.bible import kjv, parallel_chapters
from genloom.data.split import SEED, VAL_FRACTION, split_indices  # noqa: F401  (the split's defaults)
from genloom.data.tokenizers import Tokenizer, load_tokenizer, train_tokenizer
from genloom.errors import GenloomError, choices
from genloom.files import atomic_write_bytes, atomic_write_text

FORTUNES = Path("/usr/share/games/fortunes")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TEXT_SUFFIXES = {".txt", ".md", ".text", ""}


def _need(path: Path, package: str) -> Path:
    if not path.exists():
        raise GenloomError(f"{path} is missing: install the Debian package '{package}' (apt-get install {package})")
    return path


def _fortune_file(path: Path) -> list[str]:
    text = ANSI.sub("", path.read_text(encoding="utf-8", errors="replace"))
    return [d.strip("\n") for d in re.split(r"^%\s*$", text, flags=re.M) if d.strip()]


def tang() -> list[str]:
    """313 Tang poems (Debian fortunes-zh, GPL-3+), each a document: title, author, verses."""
    return _fortune_file(_need(FORTUNES / "tang300", "fortunes-zh"))


def song() -> list[str]:
    """95 Song ci (Debian fortunes-zh, GPL-3+)."""
    return _fortune_file(_need(FORTUNES / "song100", "fortunes-zh"))


def poems_zh() -> list[str]:
    return tang() + song()


def fortunes() -> list[str]:
    """English fortunes (Debian fortunes), every %-separated cookie a document; offensive sets excluded."""
    _need(FORTUNES / "fortunes", "fortunes")
    skip = {"tang300", "song100", "chinese"}
    docs = []
    for p in sorted(FORTUNES.iterdir()):
        if p.suffix or p.name in skip or p.name.endswith("-off") or not p.is_file():
            continue
        docs += _fortune_file(p)
    return docs


def chatterbot() -> list[str]:
    """2,026 English dialogues in 21 categories (PyPI chatterbot-corpus), as 'User:'/'Bot:' turns."""
    try:
        import chatterbot_corpus
        import yaml
    except ImportError:
        raise GenloomError("the chatterbot corpus is missing: pip install chatterbot-corpus") from None
    folder = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    docs = []
    for f in sorted(folder.glob("*.yml")):
        for conv in yaml.safe_load(f.read_text(encoding="utf-8")).get("conversations", []):
            turns = [("User: " if i % 2 == 0 else "Bot: ") + str(t).strip() for i, t in enumerate(conv)]
            docs.append("\n".join(turns))
    return docs


def bible_en_es() -> list[str]:
    """EN-ES Bible chapters as 'EN: ...'/'ES: ...' verse lines, the held-out chapters of the eval set left out."""
    return parallel_chapters("train")


DEFAULT_CHAT_TEMPLATE = {  # how genloom's chatterbot corpus lays out a dialogue ("User: ...\nBot: ...")
    "system": "{content}\n",
    "user": "User: {content}\n",
    "assistant": "Bot: {content}\n",
    "generation_prompt": "Bot:",
    "stop": ["\nUser:"],
}


def read_chat_template(folder: str | Path) -> dict | None:
    """A model folder's chat_template.json (a JSON object), or None when it has none; unreadable -> GenloomError."""
    path = Path(folder) / "chat_template.json"
    if not path.is_file():
        return None
    try:
        given = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise GenloomError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(given, dict):
        raise GenloomError(f"{path} must hold a JSON object")
    return given

CORPUS_INFO = {  # where each named corpus comes from and its licence, for model cards
    "tang": "313 Tang poems, Debian package fortunes-zh (tang300); GPL-3+",
    "song": "95 Song ci, Debian package fortunes-zh (song100); GPL-3+",
    "poems-zh": "Tang poems and Song ci, Debian package fortunes-zh; GPL-3+",
    "kjv": "King James Bible, Debian packages bible-kjv and bible-kjv-text; public domain",
    "fortunes": "English fortune cookies, Debian package fortunes (offensive sets excluded); BSD-style",
    "chatterbot": "chatterbot-corpus English dialogues (PyPI chatterbot-corpus); BSD-3-Clause",
    "chatterbot-grounded": "chatterbot-corpus English dialogues (PyPI chatterbot-corpus; BSD-3-Clause), each user "
                           "turn with 3 retrieved dialogues in the prompt (genloom.knowledge.examples)",
    "bible-en-es": "verse-aligned English (KJV, public domain) and Spanish (Reina-Valera 1909, public domain) "
                   "Bible, train-side chapters only; Debian packages bible-kjv, diatheke and sword-text-sparv",
}

CORPORA = {
    "tang": tang,
    "song": song,
    "poems-zh": poems_zh,
    "kjv": kjv,
    "fortunes": fortunes,
    "chatterbot": chatterbot,
    "bible-en-es": bible_en_es,
}


def _chunks(text: str, size: int = 2000) -> list[str]:
    """Split one long text into documents at paragraph breaks, about `size` characters each."""
    docs, cur = [], []
    n = 0
    for para in re.split(r"\n\s*\n", text):
        cur.append(para)
        n += len(para)
        if n >= size:
            docs.append("\n\n".join(cur))
            cur, n = [], 0
    if cur:
        docs.append("\n\n".join(cur))
    return [d for d in docs if d.strip()]


def iter_jsonl(path: Path):
    """(line number, object) for each non-blank line; a line that is not JSON is an error naming it."""
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError:
            raise GenloomError(f"{path}:{i}: not valid JSON") from None


def _jsonl(path: Path, field: str) -> list[str]:
    docs = []
    for i, row in iter_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise GenloomError(f"{path}:{i}: no string field '{field}' (set --text-field)")
        docs.append(row[field])
    return docs


def read_documents(source: str, text_field: str = "text") -> list[str]:
    """A corpus name, a .txt/.jsonl file, or a folder of them -> a list of documents."""
    if source in CORPORA:
        docs = CORPORA[source]()
    else:
        path = Path(source)
        if not path.exists():
            raise GenloomError(f"corpus not found: '{source}'; give a file, a folder, or one of "
                              f"{choices([*CORPORA, *music.CORPORA])}")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        files = [p for p in files if p.suffix in TEXT_SUFFIXES | {".jsonl"} and not p.name.startswith(".")]
        docs = []
        for p in files:
            try:
                if p.suffix == ".jsonl":
                    docs += _jsonl(p, text_field)
                else:
                    text = p.read_text(encoding="utf-8")
                    docs += _chunks(text) if len(files) == 1 else [text]
            except UnicodeDecodeError:
                raise GenloomError(f"{p} is not UTF-8 text") from None
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise GenloomError(f"corpus '{source}' is empty: no text found")
    return docs


def split_documents(docs: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic document split: the documents at split_indices' train and validation positions."""
    train, val = split_indices(len(docs), val_fraction, seed)
    return [docs[i] for i in train], [docs[i] for i in val]


SPLIT_UNITS = {"document": None, "paragraph": re.compile(r"\n\s*\n"), "line": re.compile(r"\n")}
JOINERS = {"document": "", "paragraph": "\n\n", "line": "\n"}


def _units(docs: list[str], pattern: re.Pattern | None) -> list[tuple[int, str]]:
    """(document number, text) of each non-blank paragraph or line; whole documents for no pattern."""
    if pattern is None:
        return list(enumerate(docs))
    return [(i, u) for i, d in enumerate(docs) for u in pattern.split(d) if u.strip()]


def _blocks(units: list[tuple[int, str]], idx: list[int], joiner: str) -> list[str]:
    """The units at sorted positions idx; neighbours from one document joined back into one block."""
    blocks: list[list[str]] = []
    for k, i in enumerate(idx):
        if k and idx[k - 1] == i - 1 and units[i - 1][0] == units[i][0]:
            blocks[-1].append(units[i][1])
        else:
            blocks.append([units[i][1]])
    return [joiner.join(b) for b in blocks]


def split_corpus(docs: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str], dict]:
    """Split by documents; when there are too few for the validation fraction, by paragraphs, then by lines.

    The first unit with round(n * val_fraction) >= 1 is drawn by split_indices' seeded permutation (if none
    is, the coarsest unit with the most of them, one held out); neighbours on one side from one document
    are joined back into blocks, so the text keeps its shape. Returns the train and validation documents and
    how the split was made (for meta.json)."""
    chosen = possible = None
    for unit, pattern in SPLIT_UNITS.items():
        units = _units(docs, pattern)
        if len(units) >= 2 and (possible is None or len(units) > len(possible[1])):
            possible = unit, units
        if val_fraction == 0 or int(round(len(units) * val_fraction)) >= 1:
            chosen = unit, units
            break
    unit, units = chosen or possible or (None, None)
    if units is None:
        raise GenloomError(
            "the source is a single line of text, too little to hold out a validation split: give more text "
            "(several lines or paragraphs), or train without validation with --val-fraction 0 (data.val_fraction = 0)"
        )
    train, val = split_indices(len(units), val_fraction, seed)
    how = {"by": unit, "units": {"train": len(train), "val": len(val)}}
    if unit != "document":
        how["why"] = (f"{len(docs)} document{'s' if len(docs) > 1 else ''} cannot give a {val_fraction:g} "
                      f"validation fraction: held out {unit}s instead")
    return _blocks(units, train, JOINERS[unit]), _blocks(units, val, JOINERS[unit]), how


def encode_documents(tok: Tokenizer, docs: list[str]) -> np.ndarray:
    """Encode documents and join them with end-of-text (or a blank line for char vocabularies)."""
    sep = [tok.eot_id] if tok.eot_id is not None else tok.encode("\n\n")
    if hasattr(tok, "encode_batch"):
        encoded = tok.encode_batch(docs)
    else:
        encoded = [tok.encode(d) for d in docs]
    ids: list[int] = []
    for e in encoded:
        ids += e
        ids += sep
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    return np.asarray(ids, dtype=dtype)


def prepare(
    source: str,
    out_dir: str | Path,
    tokenizer: str | None = "char",
    vocab_size: int = 4096,
    val_fraction: float = VAL_FRACTION,
    seed: int = SEED,
    text_field: str = "text",
    tokenizer_from: str | None = None,
    transpose: int = music.TRANSPOSE,
) -> dict:
    """`genloom data`: read, split, train (or reuse) a tokenizer on the train side, write the token files.

    Music (a music tokenizer, or a music corpus/file/folder with no tokenizer named) goes to data.music.prepare;
    a speech folder in LJSpeech layout (metadata.csv + wavs/) to data.speech.prepare."""
    if speech.is_speech_folder(source):
        return speech.prepare(source, out_dir, val_fraction, seed)
    if tokenizer in music.TOKENIZERS or ((tokenizer is None or tokenizer_from) and music.is_music_source(source)):
        scheme = tokenizer if tokenizer in music.TOKENIZERS else "remi"
        return music.prepare(source, out_dir, scheme, val_fraction, seed, transpose, tokenizer_from)
    if music.is_music_source(source) and not tokenizer_from:
        raise GenloomError(f"'{source}' is music: tokenise it with one of {choices(music.TOKENIZERS)} "
                           f"(--tokenizer), not '{tokenizer}'")
    tokenizer = tokenizer or "char"
    docs = read_documents(source, text_field)
    train_docs, val_docs, how = split_corpus(docs, val_fraction, seed)
    if tokenizer_from:
        tok = load_tokenizer(tokenizer_from)
    elif tokenizer == "char":
        # every character of the corpus, so validation never misses one, and the "\n\n" documents are joined with
        tok = train_tokenizer("char", docs + ["\n"])
    else:
        tok = train_tokenizer(tokenizer, train_docs, vocab_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_ids = encode_documents(tok, train_docs)
    val_ids = encode_documents(tok, val_docs) if val_docs else np.zeros(0, dtype=train_ids.dtype)
    atomic_write_bytes(out / "train.bin", train_ids.tobytes())
    atomic_write_bytes(out / "val.bin", val_ids.tobytes())
    tok.save(out / "tokenizer.json")
    meta = {
        "source": source,
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "dtype": str(train_ids.dtype),
        "seed": seed,
        "val_fraction": val_fraction,
        "split": how,
        "documents": {"train": len(train_docs), "val": len(val_docs)},
        "tokens": {"train": int(train_ids.size), "val": int(val_ids.size)},
        "chars": {"train": sum(map(len, train_docs)), "val": sum(map(len, val_docs))},
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False))
    return meta


class TokenData:
    """A prepared folder: memory-mapped token ids per split, the tokenizer and the meta data."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise GenloomError(f"{self.folder} is not a prepared data folder (no meta.json); run `genloom data` first")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.tokenizer = load_tokenizer(self.folder)
        self.dtype = np.dtype(self.meta["dtype"])

    def split(self, name: str, part: str = "tokens") -> np.ndarray:
        """A split's token ids, or (part "mask") its per-token target marks (uint8, 1: a training target) or
        (part "starts") the offsets its examples start at (int64): what example sources write (LMTask loss_mask)."""
        path = self.folder / (f"{name}.bin" if part == "tokens" else f"{name}.{part}.bin")
        dtype = {"tokens": self.dtype, "mask": np.dtype(np.uint8), "starts": np.dtype(np.int64)}[part]
        if not path.is_file() or path.stat().st_size == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r")
