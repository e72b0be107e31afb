"""Training examples for grounded chat: each dialogue turn with its retrieved passages in the prompt.

For every (earlier turns, user turn, reply) of a training-side dialogue, the user turn is searched in a knowledge
base built from the training-side dialogues only (one passage per dialogue). The dialogue's own passage goes in
among the k - 1 best other passages at a random position (the model must find it, not trust rank 1); with
probability `drop` it is left out and k distractors stand alone, so the model also meets contexts that do not
hold the answer. The example is rendered with genloom.knowledge.grounding's layout, the one the server uses:

    <earlier turns>
    Doc: ...        (k lines)
    User: <question>
    Bot: <reply>

Validation dialogues get the same treatment, with their own passage (which is not in the training base) put in
among distractors from the training base. Loss is on the whole text (LMTask has no mask): the model also learns
to copy the question's words from the matching passage, which is the same skill as copying the reply.
Deterministic given the seed: one numpy generator, consumed in dialogue order.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genloom.data.split import split_indices
from genloom.data.text import encode_documents, prepare as prepare_text, read_documents
from genloom.data.tokenizers import load_tokenizer, train_tokenizer
from genloom.embeddings import embed
from genloom.errors import GenloomError
from genloom.files import atomic_write_bytes, atomic_write_text
from genloom.knowledge.documents import Document
from genloom.knowledge.grounding import Grounding, context_block
from genloom.knowledge.store import KnowledgeBase, update

TURN_PREFIXES = ("User: ", "Bot: ")
DROP = 0.2  # share of examples whose own passage is left out (distractors only)
COPIES = 3  # renderings of each turn (fresh shuffles and drops): the data are small, the positions vary
# Grounded training sources: name -> the dialogue corpus its examples are built from (genloom.data.text.CORPORA).
GROUNDED_SOURCES = {"chatterbot-grounded": "chatterbot"}


@dataclass(frozen=True)
class Turn:
    """One user turn of a dialogue: the turns before it (each 'User: ...' or 'Bot: ...'), its text, the reply."""

    dialogue: int
    history: tuple[str, ...]
    question: str
    reply: str


def turns_of(dialogue: str) -> list[str]:
    """The 'User: ...' / 'Bot: ...' lines of a dialogue as genloom.data.text.chatterbot writes it."""
    out: list[str] = []
    for line in dialogue.split("\n"):
        if line.startswith(TURN_PREFIXES) or not out:
            out.append(line)
        else:  # a turn that spans lines
            out[-1] += "\n" + line
    return out


def dialogue_turns(dialogues: list[str], ids: list[int] | None = None) -> list[Turn]:
    """Every user turn answered by a bot turn, with the turns before it."""
    out = []
    for d, text in zip(ids if ids is not None else range(len(dialogues)), dialogues):
        turns = turns_of(text)
        for i in range(0, len(turns) - 1, 2):
            question, reply = turns[i][len("User: "):].strip(), turns[i + 1][len("Bot: "):].strip()
            if turns[i].startswith("User: ") and turns[i + 1].startswith("Bot: ") and question and reply:
                out.append(Turn(d, tuple(turns[:i]), question, reply))
    return out


def grounded_prompt(history: list[str] | tuple[str, ...], question: str, passages: list[str],
                    grounding: Grounding) -> str:
    """Earlier turns, then the `Doc:` lines, then the user's question and the reply cue (grounding's layout)."""
    head = "".join(f"{t}\n" for t in history)
    return f"{head}{context_block(passages, grounding)}User: {question}\nBot:"


def dialogue_base(folder: str | Path, dialogues: list[str]) -> KnowledgeBase:
    """A knowledge base of the dialogues, one text document (hence one passage) per dialogue, keyed by index."""
    docs = [Document.from_text(f"dialogue-{i:05d}", "text", d.strip()) for i, d in enumerate(dialogues)]
    update(folder, docs, drop_missing=True)
    return KnowledgeBase.open(folder)


def build_examples(turns: list[Turn], own: dict[int, str], kb: KnowledgeBase, *, grounding: Grounding = Grounding(),
                   drop: float = DROP, copies: int = 1, seed: int = 1337, mode: str = "hybrid") -> list[dict]:
    """Rendered examples {"text", "prompt", "reply", "dialogue", "answer_at"} (answer_at: the own passage's
    position among the Doc lines, None when dropped). `own[d]` is dialogue d's own passage text; a retrieved
    passage with the same text counts as the own one and is not used as a distractor."""
    rng = np.random.default_rng(seed)
    vectors = embed([t.question for t in turns]) if mode != "bm25" and turns else [None] * len(turns)
    out = []
    for t, v in zip(turns, vectors):
        mine = own[t.dialogue].strip()
        hits = kb.search(t.question, k=grounding.k + 1, mode=mode, vector=v)
        others = [h.passage.text for h in hits if h.passage.text.strip() != mine]
        for _ in range(copies):
            if rng.random() < drop:
                passages, at = others[: grounding.k], None
            else:
                passages = others[: grounding.k - 1]
                at = int(rng.integers(len(passages) + 1))
                passages = passages[:at] + [mine] + passages[at:]
            prompt = grounded_prompt(t.history, t.question, passages, grounding)
            out.append({"text": f"{prompt} {t.reply}", "prompt": prompt, "reply": t.reply, "dialogue": t.dialogue,
                        "answer_at": at})
    return out


def grounded_examples(dialogues: list[str], val_fraction: float, seed: int, kb_folder: str | Path, *,
                      grounding: Grounding = Grounding(), drop: float = DROP, copies: int = COPIES) -> dict:
    """Train and validation examples of a dialogue corpus, split by dialogue as `genloom data` splits documents;
    the knowledge base (written to kb_folder) holds the training-side dialogues only."""
    train_ids, val_ids = split_indices(len(dialogues), val_fraction, seed)
    kb = dialogue_base(kb_folder, [dialogues[i] for i in train_ids])
    own = dict(enumerate(dialogues))
    train = build_examples(dialogue_turns([dialogues[i] for i in train_ids], train_ids), own, kb,
                           grounding=grounding, drop=drop, copies=copies, seed=seed)
    val = build_examples(dialogue_turns([dialogues[i] for i in val_ids], val_ids), own, kb, grounding=grounding,
                         drop=drop, copies=1, seed=seed + 1)
    return {"train": train, "val": val, "dialogues": {"train": len(train_ids), "val": len(val_ids)},
            "kb_passages": len(kb.passages)}


def prepare_grounded(source: str, out_dir: str | Path, tokenizer: str = "bpe", vocab_size: int = 1024,
                     val_fraction: float = 0.05, seed: int = 1337, *, grounding: Grounding = Grounding(),
                     drop: float = DROP, copies: int = COPIES, tokenizer_from: str | None = None) -> dict:
    """`genloom data chatterbot-grounded`: grounded examples -> train.bin / val.bin, like genloom.data.text.prepare
    (examples joined by end-of-text), plus examples.jsonl (the validation examples, for inspection)."""
    if source not in GROUNDED_SOURCES:
        raise GenloomError(f"unknown grounded source '{source}'; choose one of {', '.join(GROUNDED_SOURCES)}")
    corpus = GROUNDED_SOURCES[source]
    dialogues = read_documents(corpus)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        ex = grounded_examples(dialogues, val_fraction, seed, Path(tmp) / "kb", grounding=grounding, drop=drop,
                               copies=copies)
    train_texts = [e["text"] for e in ex["train"]]
    val_texts = [e["text"] for e in ex["val"]]
    tok = load_tokenizer(tokenizer_from) if tokenizer_from else train_tokenizer(tokenizer, train_texts, vocab_size)
    train_ids = encode_documents(tok, train_texts)
    val_ids = encode_documents(tok, val_texts) if val_texts else np.zeros(0, dtype=train_ids.dtype)
    atomic_write_bytes(out / "train.bin", train_ids.tobytes())
    atomic_write_bytes(out / "val.bin", val_ids.tobytes())
    tok.save(out / "tokenizer.json")
    atomic_write_text(out / "examples.jsonl", "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in ex["val"]))
    meta = {
        "source": source,
        "built_from": corpus,
        "grounding": {"k": grounding.k, "passage_chars": grounding.passage_chars, "drop": drop, "copies": copies,
                      "search": "hybrid", "kb": f"{ex['kb_passages']} training-side dialogues, a passage each",
                      "loss": "whole text"},
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "dtype": str(train_ids.dtype),
        "seed": seed,
        "val_fraction": val_fraction,
        "split": {"by": "document", "units": ex["dialogues"]},
        "documents": {"train": len(train_texts), "val": len(val_texts)},
        "tokens": {"train": int(train_ids.size), "val": int(val_ids.size)},
        "chars": {"train": sum(map(len, train_texts)), "val": sum(map(len, val_texts))},
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False))
    return meta


def prepare(source: str, out_dir: str | Path, tokenizer: str = "char", vocab_size: int = 4096,
            val_fraction: float = 0.05, seed: int = 1337, text_field: str = "text",
            tokenizer_from: str | None = None) -> dict:
    """`genloom data SOURCE`: a grounded source (GROUNDED_SOURCES) built here, any other by genloom.data.text."""
    if source in GROUNDED_SOURCES and not Path(source).exists():
        return prepare_grounded(source, out_dir, tokenizer, vocab_size, val_fraction, seed,
                                tokenizer_from=tokenizer_from)
    return prepare_text(source, out_dir, tokenizer, vocab_size, val_fraction, seed, text_field, tokenizer_from)
