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
among distractors from the training base. The data folder marks the reply tokens (and the end-of-text after
each) as the only training targets ({split}.mask.bin, with {split}.starts.bin: where each example starts) for
LMTask's `data.loss_mask`: the prompt and the passages are context, not something to predict.

`support-grounded` adds documentation questions to the dialogues: for installed man pages outside the
benchmark's (genloom.knowledge.manpages.HELD_OUT), "What does the --NAME option of CMD do?" answered by the
option's first sentence, with the option's own section among distractors from a base of those pages.
Deterministic given the seed: one numpy generator, consumed in dialogue order.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genloom.data.split import split_indices
from genloom.data.text import prepare as prepare_text
from genloom.data.text import read_documents
from genloom.data.tokenizers import load_tokenizer, train_tokenizer
from genloom.embeddings import embed
from genloom.errors import GenloomError
from genloom.files import atomic_write_bytes, atomic_write_text
from genloom.knowledge.documents import Document
from genloom.knowledge.documents import split as split_passages
from genloom.knowledge.grounding import Grounding, context_block
from genloom.knowledge.manpages import (
    HELD_OUT,
    markdown,
    option_questions,
    parse,
    render_many,
    same_page,
    training_pages,
)
from genloom.knowledge.store import KnowledgeBase, update

TURN_PREFIXES = ("User: ", "Bot: ")
DROP = 0.1  # share of examples whose own passage is left out (distractors only)
COPIES = 3  # renderings of each turn (fresh shuffles and drops): the data are small, the positions vary
# Copy warm-up: per turn, this many extra examples whose only Doc line is the answer's own passage (short, so many
# fit a training window, and the reply is a span of that line): the model learns to copy before it must also
# find the passage among distractors. Training side only.
EASY = 1
# Grounded training sources: name -> the dialogue corpus its examples are built from (genloom.data.text.CORPORA).
GROUNDED_SOURCES = {"chatterbot-grounded": "chatterbot", "support-grounded": "chatterbot"}
MAN_PAGES = 300  # support-grounded: at most this many installed man pages of commands (HELD_OUT excluded)
MAN_QUESTIONS = 6  # per page: its first options with a usable long name


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


def _flat(text: str) -> str:
    return " ".join(text.lower().split())


def build_examples(turns: list[Turn], own: dict[int, str], kb: KnowledgeBase, *, grounding: Grounding = Grounding(),
                   drop: float = DROP, copies: int = 1, seed: int = 1337, mode: str = "hybrid",
                   easy: int = 0) -> list[dict]:
    """Rendered examples {"text", "prompt", "reply", "dialogue", "answer_at"} (answer_at: the own passage's
    position among the Doc lines, None when dropped). `own[d]` is dialogue d's own passage text; a retrieved
    passage with the same text counts as the own one and is not used as a distractor, nor is one that holds the
    same user turn (`User: <question>`, as the chatterbot corpus repeats a question with other replies): the
    question must single out the passage to copy from. `easy` extra examples per turn have the own passage as
    their only Doc line (the copy warm-up, EASY)."""
    rng = np.random.default_rng(seed)
    vectors = embed([t.question for t in turns]) if mode != "bm25" and turns else [None] * len(turns)
    out = []
    for t, v in zip(turns, vectors):
        mine = own[t.dialogue].strip()
        hits = kb.search(t.question, k=grounding.k + 4, mode=mode, vector=v)
        same = _flat(f"User: {t.question}")
        others = [h.passage.text for h in hits if h.passage.text.strip() != mine and same not in _flat(h.passage.text)]
        for _ in range(easy):
            prompt = grounded_prompt(t.history, t.question, [mine], grounding)
            out.append({"text": f"{prompt} {t.reply}", "prompt": prompt, "reply": t.reply, "dialogue": t.dialogue,
                        "answer_at": 0})
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
                      grounding: Grounding = Grounding(), drop: float = DROP, copies: int = COPIES,
                      easy: int = EASY) -> dict:
    """Train and validation examples of a dialogue corpus, split by dialogue as `genloom data` splits documents;
    the knowledge base (written to kb_folder) holds the training-side dialogues only."""
    train_ids, val_ids = split_indices(len(dialogues), val_fraction, seed)
    kb = dialogue_base(kb_folder, [dialogues[i] for i in train_ids])
    own = dict(enumerate(dialogues))
    train = build_examples(dialogue_turns([dialogues[i] for i in train_ids], train_ids), own, kb,
                           grounding=grounding, drop=drop, copies=copies, seed=seed, easy=easy)
    val = build_examples(dialogue_turns([dialogues[i] for i in val_ids], val_ids), own, kb, grounding=grounding,
                         drop=drop, copies=1, seed=seed + 1)
    return {"train": train, "val": val, "dialogues": {"train": len(train_ids), "val": len(val_ids)},
            "kb_passages": len(kb.passages)}


def manpage_examples(pages: dict[str, dict], val_fraction: float, seed: int, kb_folder: str | Path, *,
                     grounding: Grounding = Grounding(), drop: float = DROP, copies: int = COPIES,
                     per_page: int = MAN_QUESTIONS, easy: int = EASY) -> dict:
    """Option questions over man pages ({page: genloom.knowledge.manpages.parse(...)}), split by page; the base
    (kb_folder) holds the training-side pages; each answer's own passage is its option's section."""
    names = sorted(pages)
    train_ids, val_ids = split_indices(len(names), val_fraction, seed)
    docs = {n: Document.from_text(f"{n}.md", "markdown", markdown(n, pages[n])) for n in names}
    own, turns = {}, {"train": [], "val": []}
    for side, ids in (("train", train_ids), ("val", val_ids)):
        for i in ids:
            sections = {p.heading: p.text for p in split_passages(docs[names[i]])}
            for q in option_questions(names[i], pages[names[i]])[:per_page]:
                if q["heading"] in sections:
                    own[q["id"]] = sections[q["heading"]]
                    turns[side].append(Turn(q["id"], (), q["question"], q["reference"]))
    update(kb_folder, [docs[names[i]] for i in train_ids], drop_missing=True)
    kb = KnowledgeBase.open(kb_folder)
    return {"train": build_examples(turns["train"], own, kb, grounding=grounding, drop=drop, copies=copies,
                                    seed=seed + 2, easy=easy),
            "val": build_examples(turns["val"], own, kb, grounding=grounding, drop=drop, copies=1, seed=seed + 3),
            "pages": {"train": len(train_ids), "val": len(val_ids)}, "kb_passages": len(kb.passages)}


def installed_manpages(limit: int = MAN_PAGES) -> dict[str, dict]:
    """Parsed installed section-1 man pages of commands that have options: renders an even spread of twice
    `limit` candidates and keeps the first `limit` with a usable option question. A page that is a held-out one
    under another name (gunzip is gzip's page, vdir shares ls's options) is left out too (manpages.same_page)."""
    held = [parse(t) for t in render_many(HELD_OUT).values() if t]
    out = {}
    for name, text in render_many(training_pages(2 * limit)).items():
        info = parse(text) if text else None
        if info and option_questions(name, info) and len(out) < limit and not same_page(info, held):
            out[name] = info
    return out


def encode_examples(tok, examples: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids of the examples joined by end-of-text (as encode_documents joins texts), the per-token target
    marks (1 on the reply's tokens and the end-of-text after it, 0 on the prompt) and each example's start.
    Prompt and reply are encoded apart, as at inference, where the prompt ends at the `Bot:` cue."""
    sep = [tok.eot_id] if tok.eot_id is not None else tok.encode("\n\n")
    ids: list[int] = []
    mask: list[int] = []
    starts: list[int] = []
    for e in examples:
        p, r = tok.encode(e["prompt"]), tok.encode(" " + e["reply"])
        starts.append(len(ids))
        ids += p + r + sep
        mask += [0] * len(p) + [1] * (len(r) + len(sep))
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    return np.asarray(ids, dtype=dtype), np.asarray(mask, dtype=np.uint8), np.asarray(starts, dtype=np.int64)


def prepare_grounded(source: str, out_dir: str | Path, tokenizer: str = "bpe", vocab_size: int = 1024,
                     val_fraction: float = 0.05, seed: int = 1337, *, grounding: Grounding = Grounding(),
                     drop: float = DROP, copies: int = COPIES, tokenizer_from: str | None = None,
                     manpages: dict[str, dict] | None = None) -> dict:
    """`genloom data chatterbot-grounded` (or support-grounded: also man-page questions; `manpages` overrides
    the installed pages): grounded examples -> train.bin / val.bin with their masks and starts (see the module
    doc), examples joined by end-of-text, plus examples.jsonl (the validation examples, for inspection)."""
    if source not in GROUNDED_SOURCES:
        raise GenloomError(f"unknown grounded source '{source}'; choose one of {', '.join(GROUNDED_SOURCES)}")
    corpus = GROUNDED_SOURCES[source]
    dialogues = read_documents(corpus)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = None
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        ex = grounded_examples(dialogues, val_fraction, seed, Path(tmp) / "kb", grounding=grounding, drop=drop,
                               copies=copies)
        if source == "support-grounded":
            pages = installed_manpages() if manpages is None else manpages
            if not pages:
                raise GenloomError("support-grounded needs man pages: install man-db and manpages "
                                   "(apt-get install man-db manpages coreutils), or use chatterbot-grounded")
            docs = manpage_examples(pages, val_fraction, seed, Path(tmp) / "kb-man", grounding=grounding,
                                    drop=drop, copies=copies)
    train, val = ex["train"] + (docs["train"] if docs else []), ex["val"] + (docs["val"] if docs else [])
    if docs:  # interleave the two kinds (seeded), so that every stretch of training sees both
        rng = np.random.default_rng(seed + 4)
        train = [train[i] for i in rng.permutation(len(train))]
    train_texts = [e["text"] for e in train]
    tok = load_tokenizer(tokenizer_from) if tokenizer_from else train_tokenizer(tokenizer, train_texts, vocab_size)
    parts = {"train": encode_examples(tok, train), "val": encode_examples(tok, val)}
    for split, (ids, mask, starts) in parts.items():
        atomic_write_bytes(out / f"{split}.bin", ids.tobytes())
        atomic_write_bytes(out / f"{split}.mask.bin", mask.tobytes())
        atomic_write_bytes(out / f"{split}.starts.bin", starts.tobytes())
    tok.save(out / "tokenizer.json")
    atomic_write_text(out / "examples.jsonl", "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in val))
    kb_note = f"{ex['kb_passages']} training-side dialogues, a passage each"
    if docs:
        kb_note += (f"; man pages: {docs['pages']['train']} training-side pages ({docs['kb_passages']} passages), "
                    f"{docs['pages']['val']} validation-side, the benchmark's {len(HELD_OUT)} left out")
    meta = {
        "source": source,
        "built_from": corpus + (" + installed man pages" if docs else ""),
        "grounding": {"k": grounding.k, "passage_chars": grounding.passage_chars, "drop": drop, "copies": copies,
                      "copy_warmup": f"{EASY} example(s) per training turn with its own passage as the only Doc line",
                      "distractors": "never a passage holding the same user turn",
                      "search": "hybrid", "kb": kb_note, "loss": "reply tokens only (loss_mask)"},
        "loss_mask": True,
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "dtype": str(parts["train"][0].dtype),
        "seed": seed,
        "val_fraction": val_fraction,
        "split": {"by": "document", "units": ex["dialogues"], **({"pages": docs["pages"]} if docs else {})},
        "documents": {"train": len(train), "val": len(val)},
        "tokens": {"train": int(parts["train"][0].size), "val": int(parts["val"][0].size),
                   "targets": int(parts["train"][1].sum())},
        "chars": {"train": sum(map(len, train_texts)), "val": sum(len(e["text"]) for e in val)},
    }
    if docs:
        meta["man_pages"] = sorted(pages)
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False))
    return meta


def prepare(source: str, out_dir: str | Path, tokenizer: str = "char", vocab_size: int = 4096,
            val_fraction: float = 0.05, seed: int = 1337, text_field: str = "text",
            tokenizer_from: str | None = None, transpose: int = 3) -> dict:
    """`genloom data SOURCE`: a grounded source (GROUNDED_SOURCES) built here, any other by genloom.data.text
    (music sources too: `transpose` is theirs)."""
    if source in GROUNDED_SOURCES and not Path(source).exists():
        return prepare_grounded(source, out_dir, tokenizer, vocab_size, val_fraction, seed,
                                tokenizer_from=tokenizer_from)
    return prepare_text(source, out_dir, tokenizer, vocab_size, val_fraction, seed, text_field, tokenizer_from,
                        transpose=transpose)
