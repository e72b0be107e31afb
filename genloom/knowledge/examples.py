"""Training examples for grounded chat: each dialogue turn with its retrieved passages in the prompt.

For every (earlier turns, user turn, reply) of a training-side dialogue, the user turn is searched in a knowledge
base built from the training-side dialogues only (one passage per dialogue). The k best passages go into the prompt
in retrieval order, the dialogue's own passage where retrieval ranks it (so the model learns the prior that the
top passage usually answers, and to check the question against each passage); when retrieval misses it, it is put
in at a random position. With probability `drop` it is left out and k distractors stand alone, and the reply to
learn is grounding.NOT_FOUND (the answer is not in the context, so the model says so instead of inventing). The
example is rendered with genloom.knowledge.grounding's layout, the one the server uses:

    <earlier turns>
    Doc: ...        (k lines)
    User: <question>
    Bot: <reply>

Validation dialogues are searched the same way in a base that also holds the validation side (as the served base
holds every dialogue), so their own passage stands at its retrieved rank. The data folder marks the reply tokens
(and the end-of-text after each) as the only training targets ({split}.mask.bin, with {split}.starts.bin: where
each example starts) for LMTask's `data.loss_mask`: the prompt and the passages are context, not something to
predict.

`support-grounded` adds documentation questions to the dialogues: for installed man pages outside the
benchmark's (genloom.knowledge.manpages.HELD_OUT), "What does the --NAME option of CMD do?" answered by the
option's first sentence, with the option's own section among its retrieved neighbours from a base of those pages;
and synthetic copy examples (`copy_examples`) whose content cannot be memorised: Doc lines made of random
sentences of the fortunes and the King James Bible, shaped as dialogues or as option sections, a question that one
of them answers, and that Doc's answer copied exactly as the reply. A small model learns a general copy rule from
them (find the Doc whose user turn or option matches, copy its answer) rather than the training passages by heart.
Deterministic given the seed: one numpy generator per part, consumed in order.
"""

from __future__ import annotations

import json
import re
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
from genloom.knowledge.grounding import NOT_FOUND, Grounding, context_block, shown_reply
from genloom.knowledge.manpages import (
    HELD_OUT,
    first_sentence,
    markdown,
    option_questions,
    parse,
    render_many,
    same_page,
    training_pages,
)
from genloom.knowledge.store import KnowledgeBase, update

TURN_PREFIXES = ("User: ", "Bot: ")
DROP = 0.03  # share of examples whose own passage is left out: distractors only, the reply is NOT_FOUND
COPIES = 2  # renderings of each turn (each its own draw of `drop`)
# Copy warm-up: per turn, this many extra examples whose only Doc line is the answer's own passage (short, so many
# fit a training window, and the reply is a span of that line). Training side only; off by default since the
# synthetic copy examples teach copying without letting the model learn the passages by heart.
EASY = 0
SYNTHETIC = 8_000  # support-grounded: synthetic copy examples (copy_examples) mixed into the training side
SHUFFLE = 0.0  # share of real examples whose own passage moves from its retrieved rank to a random one (0.5 was
# tried: better at picking the answer among shuffled passages, worse on bench/grounded.py; bench/RESULTS.md)
TOP_FIRST = 0.6  # synthetic examples: share whose answering Doc is the first (retrieval ranks the answer first)
SAME_NAME = 0.3  # option-shaped synthetic examples: share whose Docs are one option of several commands
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


def dialogue_base(folder: str | Path, dialogues: list[str], ids: list[int] | None = None) -> KnowledgeBase:
    """A knowledge base of the dialogues, one text document (hence one passage) per dialogue, keyed by its index
    in the corpus (`ids`, default 0, 1, ...): a later call with more dialogues embeds only the new ones."""
    ids = range(len(dialogues)) if ids is None else ids
    docs = [Document.from_text(f"dialogue-{i:05d}", "text", d.strip()) for i, d in zip(ids, dialogues)]
    update(folder, docs, drop_missing=True)
    return KnowledgeBase.open(folder)


_SENTENCE = re.compile(r"[^.!?]+[.!?]")
_PLAIN = re.compile(r"[A-Z][^\"()\[\]*`:;]+[.!?]")  # a capital, no quotes, brackets, colons: a whole sentence


def _flat(text: str) -> str:
    return " ".join(text.lower().split())


def ranked(hits: list[str], mine: str, question: str, k: int, rng: np.random.Generator,
           drop: float, shuffle: float = SHUFFLE) -> tuple[list[str], int | None]:
    """The k passages of a prompt and where the answer's own passage (`mine`) stands among them (None: left out).
    Retrieval order (`hits`, best first), the own passage where retrieval ranks it, except with probability
    `shuffle` and when retrieval missed it: then it is put in at a random position among the best others (so the
    model learns both that the top passage usually answers and to check the question against each); left out
    with probability `drop` (k distractors). A passage that holds the same user
    turn with another reply (the chatterbot corpus repeats a question) is never a distractor: the question must
    single out the passage to copy from."""
    same = _flat(f"User: {question}")
    others = [h for h in hits if h.strip() != mine and same not in _flat(h)]
    if rng.random() < drop:
        return others[:k], None
    order = [h for h in hits if h.strip() == mine or h in others]
    at = next((i for i, h in enumerate(order[:k]) if h.strip() == mine), None)
    if at is not None and (shuffle == 0 or rng.random() >= shuffle):  # no draw at 0: the same data as before
        return order[:k], at
    at = int(rng.integers(min(k, len(others) + 1)))
    passages = others[: k - 1]
    return passages[:at] + [mine] + passages[at:], at


def example(history, question: str, passages: list[str], reply: str, grounding: Grounding, dialogue,
            at: int | None) -> dict:
    """One rendered example: its text, prompt (grounding's layout), reply, unit id and answer position. The reply
    is what the answer's Doc line shows of it (grounding.shown_reply: one line, ending at the line's cut)."""
    prompt = grounded_prompt(history, question, passages, grounding)
    reply = reply if at is None else shown_reply(reply, passages[at], grounding)
    return {"text": f"{prompt} {reply}", "prompt": prompt, "reply": reply, "dialogue": dialogue, "answer_at": at}


def build_examples(turns: list[Turn], own: dict[int, str], kb: KnowledgeBase, *, grounding: Grounding = Grounding(),
                   drop: float = DROP, copies: int = 1, seed: int = 1337, mode: str = "hybrid",
                   easy: int = 0, shuffle: float = SHUFFLE) -> list[dict]:
    """Rendered examples {"text", "prompt", "reply", "dialogue", "answer_at"} (answer_at: the own passage's
    position among the Doc lines, None when left out, and then the reply is NOT_FOUND). `own[d]` is dialogue d's
    own passage text; the Doc lines are the retrieved passages in order (`ranked`). `easy` extra examples per turn
    have the own passage as their only Doc line (the copy warm-up, EASY)."""
    rng = np.random.default_rng(seed)
    vectors = embed([t.question for t in turns]) if mode != "bm25" and turns else [None] * len(turns)
    out = []
    for t, v in zip(turns, vectors):
        mine = own[t.dialogue].strip()
        hits = [h.passage.text for h in kb.search(t.question, k=grounding.k + 4, mode=mode, vector=v)]
        out += [example(t.history, t.question, [mine], t.reply, grounding, t.dialogue, 0) for _ in range(easy)]
        for _ in range(copies):
            passages, at = ranked(hits, mine, t.question, grounding.k, rng, drop, shuffle)
            out.append(example(t.history, t.question, passages, NOT_FOUND if at is None else t.reply, grounding,
                               t.dialogue, at))
    return out


def sentences(limit: int = 60_000, seed: int = 0) -> list[str]:
    """Short plain sentences (a capital first, no quotes, brackets or colons; 3 to 14 words, at most 90
    characters) of the fortunes and the King James Bible (verse numbers dropped), shuffled: the random content of
    the synthetic copy examples."""
    texts = read_documents("fortunes") + [re.sub(r"^\d+ ", "", v) for ch in read_documents("kjv")
                                          for v in ch.split("\n")[1:]]
    out = set()
    for text in texts:
        for s in _SENTENCE.findall(" ".join(text.split())):
            s = s.strip()
            if 3 <= len(s.split()) <= 14 and len(s) <= 90 and _PLAIN.fullmatch(s) and " -" not in s:
                out.add(s)
    pool = sorted(out)
    np.random.default_rng(seed).shuffle(pool)
    return pool[:limit]


def _dialogue(rng: np.random.Generator, pool: list[str], chars: int) -> list[str]:
    """A synthetic dialogue of one or two exchanges ('User: ...' / 'Bot: ...' turns of random sentences), two
    only when its Doc line keeps them whole (at most `chars` characters)."""
    turns = [("User: " if i % 2 == 0 else "Bot: ") + pool[int(j)] for i, j in enumerate(rng.integers(len(pool), size=4))]
    return turns if rng.random() < 0.4 and len(" ".join(turns)) <= chars else turns[:2]


def _word(rng: np.random.Generator, words: list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _option(rng: np.random.Generator, pool: list[str], words: list[str], cmd: str,
            name: str | None = None) -> tuple[str, str, str]:
    """A synthetic option section of command `cmd` (a random long name unless given): (long name, passage text as
    manpages.markdown writes it, its answer: the body's first sentence)."""
    name = name or "--" + "-".join(_word(rng, words) for _ in range(1 + int(rng.integers(2))))
    short = f"-{chr(97 + int(rng.integers(26)))}, " if rng.random() < 0.6 else ""
    body = " ".join(pool[int(j)] for j in rng.integers(len(pool), size=1 + int(rng.integers(2))))
    body = body[0].lower() + body[1:] if rng.random() < 0.5 else body  # man pages mostly start lower-case
    return name, f"`{cmd} {short}{name}`: {body}", first_sentence(body)


def copy_examples(pool: list[str], n: int, seed: int, grounding: Grounding = Grounding(),
                  drop: float = DROP) -> list[dict]:
    """n synthetic examples whose content cannot be memorised (random sentences of `pool`): k Doc lines, one of
    which answers the question (the first with probability TOP_FIRST, as retrieval ranks the answer first most
    of the time), the reply that Doc's answer copied exactly; with probability `drop` no Doc answers and the reply
    is NOT_FOUND. Half are dialogue-shaped (the question is a user turn of the answering Doc, its earlier turns
    the history, the reply the Bot turn after it), half option-shaped (sections of one command, "What does the
    --NAME option of CMD do?", the reply the section's first sentence; SAME_NAME of them the same option of
    several commands)."""
    rng = np.random.default_rng(seed)
    words = sorted({w for s in pool for w in re.findall(r"\b[a-z]{3,9}\b", s)})
    k, out = grounding.k, []
    for i in range(n):
        at = 0 if rng.random() < TOP_FIRST else int(rng.integers(k))
        if i % 2 == 0:
            dialogues = [_dialogue(rng, pool, grounding.passage_chars) for _ in range(k + 1)]
            turns = dialogues[at]
            j = 2 * int(rng.integers(len(turns) // 2))
            history, question, reply = turns[:j], turns[j][len("User: "):], turns[j + 1][len("Bot: "):]
            passages = ["\n".join(d) for d in dialogues]
        else:
            if rng.random() < SAME_NAME:  # one option name, several commands: the command singles out the Doc
                cmds, name = [_word(rng, words) for _ in range(k + 1)], _option(rng, pool, words, "")[0]
                options = [_option(rng, pool, words, c, name) for c in cmds]
            else:  # the sections of one command (as a page's options rank together)
                cmds, name = [_word(rng, words)] * (k + 1), None
                options = [_option(rng, pool, words, cmds[0]) for _ in range(k + 1)]
            if len({(c, o[0]) for c, o in zip(cmds, options)}) <= k:
                continue
            history, passages = (), [o[1] for o in options]
            question, reply = f"What does the {options[at][0]} option of {cmds[at]} do?", options[at][2]
        if rng.random() < drop:  # the answering Doc gives way to the spare one
            passages[at], reply, at = passages[k], NOT_FOUND, None
        out.append(example(history, question, passages[:k], reply, grounding, f"copy-{i}", at))
    return out


def grounded_examples(dialogues: list[str], val_fraction: float, seed: int, kb_folder: str | Path, *,
                      grounding: Grounding = Grounding(), drop: float = DROP, copies: int = COPIES,
                      easy: int = EASY) -> dict:
    """Train and validation examples of a dialogue corpus, split by dialogue as `genloom data` splits documents;
    the knowledge base (written to kb_folder) holds the training-side dialogues only."""
    train_ids, val_ids = split_indices(len(dialogues), val_fraction, seed)
    kb = dialogue_base(kb_folder, [dialogues[i] for i in train_ids], train_ids)
    own = dict(enumerate(dialogues))
    train = build_examples(dialogue_turns([dialogues[i] for i in train_ids], train_ids), own, kb,
                           grounding=grounding, drop=drop, copies=copies, seed=seed, easy=easy)
    passages = len(kb.passages)
    kb = dialogue_base(kb_folder, dialogues)  # every dialogue, as served: the validation side added
    val = build_examples(dialogue_turns([dialogues[i] for i in val_ids], val_ids), own, kb, grounding=grounding,
                         drop=drop, copies=1, seed=seed + 1)
    return {"train": train, "val": val, "dialogues": {"train": len(train_ids), "val": len(val_ids)},
            "kb_passages": passages}


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
    train = build_examples(turns["train"], own, kb, grounding=grounding, drop=drop, copies=copies, seed=seed + 2,
                           easy=easy)
    passages = len(kb.passages)
    update(kb_folder, [docs[names[i]] for i in val_ids])  # the validation side added, as a served base holds all
    val = build_examples(turns["val"], own, KnowledgeBase.open(kb_folder), grounding=grounding, drop=drop, copies=1,
                         seed=seed + 3)
    return {"train": train, "val": val, "pages": {"train": len(train_ids), "val": len(val_ids)},
            "kb_passages": passages}


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


def encode_examples(tok, examples: list[dict], question_loss: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids of the examples joined by end-of-text (as encode_documents joins texts), the per-token target
    marks (1 on the reply's tokens and the end-of-text after it, 0 on the prompt) and each example's start.
    Prompt and reply are encoded apart, as at inference, where the prompt ends at the `Bot:` cue. With
    `question_loss` the last user turn (after its `User:`, up to the cue) is a target too: it repeats a Doc line's
    user turn or names its option, so it is more copying to learn from, as the reply is."""
    sep = [tok.eot_id] if tok.eot_id is not None else tok.encode("\n\n")
    ids: list[int] = []
    mask: list[int] = []
    starts: list[int] = []
    for e in examples:
        cut = e["prompt"].rfind("User:") + len("User:") if question_loss and "User:" in e["prompt"] else None
        head, ask = (e["prompt"][:cut], e["prompt"][cut:]) if cut else (e["prompt"], "")
        p, q, r = tok.encode(head), tok.encode(ask) if ask else [], tok.encode(" " + e["reply"])
        starts.append(len(ids))
        ids += p + q + r + sep
        mask += [0] * len(p) + [1] * (len(q) + len(r) + len(sep))
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
    synthetic = copy_examples(sentences(), SYNTHETIC, seed + 5, grounding, drop) if docs else []
    train = ex["train"] + (docs["train"] if docs else []) + synthetic
    val = ex["val"] + (docs["val"] if docs else [])
    if docs:  # interleave the kinds (seeded), so that every stretch of training sees each
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
                      "order": "retrieval order, the own passage where retrieval ranks it (put in at a random "
                               "position when missed); left out with probability drop, reply NOT_FOUND",
                      "synthetic_copy_examples": len(synthetic),
                      "distractors": "never a passage holding the same user turn",
                      "search": "hybrid", "kb": kb_note,
                      "loss": "reply tokens only (loss_mask)"},
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
