"""Held-out evaluation sets: {"prompt", "reference", "id"} pairs from data a default training run never saw.

chat: every user turn -> bot reply of the chatterbot dialogues on the validation side of the document split
that `genloom data chatterbot` makes (same seed, same fraction). translation: EN -> ES Bible verses of the
held-out chapters, the ones the corpus `bible-en-es` leaves out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from genloom.data.bible import chapter_of, parallel_verses, split_chapters
from genloom.data.split import SEED, VAL_FRACTION, split_indices
from genloom.data.text import iter_jsonl, read_documents
from genloom.errors import GenloomError
from genloom.files import atomic_write_text

TURN = re.compile(r"\n(?=(?:User|Bot): )")  # a new turn starts a line with its speaker, as chatterbot() writes


def _subsample(pairs: list[dict], limit: int, seed: int) -> list[dict]:
    """At most `limit` pairs (0: all), a seeded sample kept in the original order."""
    if not limit or len(pairs) <= limit:
        return pairs
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), limit, replace=False))
    return [pairs[i] for i in keep]


def chat_eval_set(val_fraction: float = VAL_FRACTION, seed: int = SEED, history: bool = True,
                  unseen_only: bool = False, limit: int = 0) -> list[dict]:
    """User turn -> bot reply pairs of the validation dialogues; the prompt ends with the cue 'Bot:'.

    With `history` the prompt is the conversation so far, exactly as the training text lays it out
    ("User: ...\nBot: ...\nUser: ...\nBot:"); without, only the last user turn. The corpus repeats many
    dialogues, so a validation one may also be a training one: `unseen_only` drops every pair whose
    prompt and reply appear word for word in a training document.
    """
    docs = read_documents("chatterbot")
    train, val = split_indices(len(docs), val_fraction, seed)
    seen = "\x00".join(docs[i] for i in train) if unseen_only else ""
    pairs = []
    for d in val:
        turns = TURN.split(docs[d])
        for i in range(0, len(turns) - 1, 2):  # user turns at even positions, each answered by the next
            context = turns[: i + 1] if history else turns[i : i + 1]
            pair = {"prompt": "\n".join(context) + "\nBot:", "reference": turns[i + 1][len("Bot: "):],
                    "id": f"chatterbot/{d}/{i // 2}"}
            if not (unseen_only and f"{pair['prompt']} {pair['reference']}" in seen):
                pairs.append(pair)
    return _subsample(pairs, limit, seed)


def translation_eval_set(english: str = "kjv", val_fraction: float = VAL_FRACTION, seed: int = SEED,
                         cache_dir: str | Path | None = None, limit: int = 0) -> list[dict]:
    """EN -> ES verse pairs of the held-out Bible chapters; prompt 'EN: {english}\\nES:', reference the Spanish."""
    rows = parallel_verses(english, cache_dir)
    held = set(split_chapters(rows, val_fraction, seed)[1])
    pairs = [{"prompt": f"EN: {en}\nES:", "reference": es, "id": f"bible-en-es/{ref}"}
             for ref, en, es in rows if chapter_of(ref) in held]
    return _subsample(pairs, limit, seed)


def write_jsonl(pairs: list[dict], path: str | Path) -> Path:
    """One JSON object per line, UTF-8, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    """An eval set written by write_jsonl (or by hand): objects with string 'prompt' and 'reference'."""
    path = Path(path)
    if not path.is_file():
        raise GenloomError(f"eval set not found: {path}")

    pairs = []
    for i, row in iter_jsonl(path):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prompt", "reference")):
            raise GenloomError(f"{path}:{i}: needs string fields 'prompt' and 'reference'")
        pairs.append(row)
    return pairs
