"""Verse-aligned English-Spanish Bible from offline Debian packages, parsed once, cached, split by chapter.

Spanish: the SWORD module spaRV1909eb (Reina-Valera 1909) read with diatheke. English: the KJV (a SWORD
module KJV when installed, else the `bible` program of bible-kjv) or the World English Bible (SWORD module
engWEB2015eb). Verses are aligned by reference (book, chapter, verse); markup such as Strong's numbers is
stripped. Chapters are split with the same seeded split as documents (split_indices), so the corpus
`bible-en-es` (train chapters) and the translation eval set (held-out chapters) never share a verse.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from genloom.data.split import SEED, VAL_FRACTION, split_indices
from genloom.errors import GenloomError, choices
from genloom.files import atomic_write_text

SPANISH = "spaRV1909eb"
ENGLISH = {"kjv": ("KJV",), "web": ("engWEB2015eb", "WEB")}  # SWORD modules to try, in order
PACKAGES = {"spaRV1909eb": "sword-text-sparv", "engWEB2015eb": "sword-text-web", "WEB": "sword-text-web",
            "KJV": "sword-text-kjv"}
APT = "apt-get install diatheke sword-text-sparv sword-text-web"
ALL_VERSES = "Gen 1:1-Rev 22:21"
CACHE_VERSION = 2  # bump when parsing changes: old caches are rebuilt
WEB_GLOSSARY = "The following words used in the World English Bible"  # appended to Rev 22:21 by the module

BOOKS = (
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth", "1 Samuel", "2 Samuel",
    "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra", "Nehemiah", "Esther", "Job", "Psalms", "Proverbs",
    "Ecclesiastes", "Song of Solomon", "Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel",
    "Amos", "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah", "Malachi",
    "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians", "2 Corinthians", "Galatians", "Ephesians",
    "Philippians", "Colossians", "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon",
    "Hebrews", "James", "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude", "Revelation",
)
BOOK_INDEX = {b: i for i, b in enumerate(BOOKS)}


def kjv() -> list[str]:
    """The King James Bible (Debian bible-kjv, public domain), one document per chapter, verses unwrapped."""
    exe = shutil.which("bible")
    if exe is None:
        raise GenloomError("the 'bible' program is missing: install the Debian packages 'bible-kjv bible-kjv-text'")
    out = subprocess.run([exe, "-p", "/usr/lib", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True)
    docs, verses, title = [], [], None
    for line in out.stdout.splitlines():
        if not line.strip():
            continue
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m:
            verses.append(f"{m.group(1)} {m.group(2).strip()}")
        elif line.startswith(" ") or not re.match(r"^[1-3]?\s?[A-Z].* \d+$", line):
            verses[-1] += " " + line.strip()  # a wrapped verse line
        else:
            if title:
                docs.append(title + "\n" + "\n".join(verses))
            title, verses = line.strip(), []
    if title:
        docs.append(title + "\n" + "\n".join(verses))
    return docs


def _sword_name(book: str) -> str:
    """'1 Samuel' -> 'I Samuel', 'Revelation' -> 'Revelation of John': how diatheke prints book names."""
    if book == "Revelation":
        return "Revelation of John"
    m = re.match(r"([123]) (.*)", book)
    return f"{'I' * int(m.group(1))} {m.group(2)}" if m else book


SWORD_BOOKS = {_sword_name(b): b for b in BOOKS}
REF = re.compile(r"(?<!\w)(" + "|".join(sorted(map(re.escape, SWORD_BOOKS), key=len, reverse=True))
                 + r") (\d+):(\d+): ")


def clean(text: str) -> str:
    """Drop notes and every tag (Strong's numbers <H0639>, <w lemma=...>, milestones), collapse whitespace."""
    text = re.sub(r"<note\b.*?</note>", " ", text, flags=re.S)
    text = re.sub(r"<[^>]*>", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r" ([,;:.!?’”)])", r"\1", text)  # spaces a removed tag left inside punctuation
    return re.sub(r"([¿¡“‘(]) ", r"\1", text)


def _diatheke(*args: str) -> str:
    exe = shutil.which("diatheke")
    if exe is None:
        raise GenloomError(f"diatheke is missing: install the Debian packages ({APT})")
    env = {**os.environ, "SWORD_PATH": os.environ.get("SWORD_PATH", "/usr/share/sword")}
    return subprocess.run([exe, *args], capture_output=True, text=True, check=True, env=env).stdout


def sword_modules() -> set[str]:
    """Names of the installed SWORD modules (diatheke's module list)."""
    out = _diatheke("-b", "system", "-k", "modulelist")
    return {m.group(1) for m in re.finditer(r"^(\S+) : ", out, flags=re.M)}


def sword_verses(module: str, key: str = ALL_VERSES) -> dict[str, str]:
    """One SWORD module's verses in OSIS format -> {'Genesis 1:1': plain text}, headings before a verse dropped."""
    if module not in sword_modules():
        raise GenloomError(f"the SWORD module {module} is not installed: apt-get install "
                           f"{PACKAGES.get(module, 'its sword-text package')} (all of them: {APT})")
    verses = {}
    for line in _diatheke("-b", module, "-f", "OSIS", "-k", key).splitlines():
        m = REF.search(line)
        if m is None:
            continue
        text = line[m.end():]
        if WEB_GLOSSARY in text:
            text = text[: text.index(WEB_GLOSSARY)]
        verses[f"{SWORD_BOOKS[m.group(1)]} {m.group(2)}:{m.group(3)}"] = clean(text)
    return verses


def kjv_verses() -> dict[str, str]:
    """The KJV of bible-kjv (the `bible` program), chapter documents -> {'Genesis 1:1': text}."""
    verses = {}
    for doc in kjv():
        title, *lines = doc.split("\n")
        for line in lines:
            num, text = line.split(" ", 1)
            verses[f"{title}:{num}"] = clean(text)
    return verses


def english_verses(english: str) -> tuple[dict[str, str], str]:
    """(verses, source name) for 'kjv' or 'web': a SWORD module when installed, else bible-kjv for the KJV."""
    if english not in ENGLISH:
        raise GenloomError(f"unknown English Bible '{english}'; choose one of {choices(ENGLISH)}")
    modules = [m for m in ENGLISH[english] if m in sword_modules()]
    if modules:
        return sword_verses(modules[0]), f"SWORD {modules[0]}"
    if english == "kjv":
        return kjv_verses(), "bible-kjv"
    raise GenloomError(f"the World English Bible is not installed: apt-get install sword-text-web (all of them: {APT})")


def _order(ref: str) -> tuple[int, int, int]:
    book, cv = ref.rsplit(" ", 1)
    c, v = cv.split(":")
    return BOOK_INDEX[book], int(c), int(v)


def default_cache_dir() -> Path:
    return Path(os.environ.get("GENLOOM_CACHE") or Path.home() / ".cache" / "genloom")


def parallel_verses(english: str = "kjv", cache_dir: str | Path | None = None) -> list[tuple[str, str, str]]:
    """[(verse id, English, Spanish)] in canonical order, for verses non-empty in both; cached as JSON."""
    path = Path(cache_dir or default_cache_dir()) / f"bible-en-es-{english}.json"
    if path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("version") == CACHE_VERSION:
            return [tuple(v) for v in cached["verses"]]
    es = sword_verses(SPANISH)
    en, source = english_verses(english)
    rows = [(ref, en[ref], es[ref]) for ref in sorted(en.keys() & es.keys(), key=_order) if en[ref] and es[ref]]
    if not rows:
        raise GenloomError(f"no verse of {source} lines up with {SPANISH}: is a SWORD module damaged?")
    payload = {"version": CACHE_VERSION, "english": source, "spanish": f"SWORD {SPANISH}", "verses": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, ensure_ascii=False))
    return rows


def chapter_of(ref: str) -> str:
    return ref.rsplit(":", 1)[0]


def split_chapters(rows, val_fraction: float = VAL_FRACTION, seed: int = SEED) -> tuple[list[str], list[str]]:
    """(train chapters, held-out chapters) by the seeded document split over chapters in canonical order."""
    chapters = list(dict.fromkeys(chapter_of(ref) for ref, _, _ in rows))
    train, val = split_indices(len(chapters), val_fraction, seed)
    return [chapters[i] for i in train], [chapters[i] for i in val]


def parallel_chapters(side: str = "train", english: str = "kjv", val_fraction: float = VAL_FRACTION,
                      seed: int = SEED, cache_dir: str | Path | None = None) -> list[str]:
    """One document per chapter of one side of the split: lines 'EN: {english}' and 'ES: {spanish}' per verse."""
    if side not in ("train", "val"):
        raise GenloomError(f"unknown side '{side}'; choose one of train, val")
    rows = parallel_verses(english, cache_dir)
    keep = set(split_chapters(rows, val_fraction, seed)[side == "val"])
    docs: dict[str, list[str]] = {}
    for ref, en, es in rows:
        if chapter_of(ref) in keep:
            docs.setdefault(chapter_of(ref), []).append(f"EN: {en}\nES: {es}")
    return ["\n".join(lines) for lines in docs.values()]
