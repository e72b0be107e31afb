"""Grounded chat training data (genloom.knowledge.examples), a tiny training run on it, and the docs question set
of bench/make_docs.py."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
from conftest import ROOT, make_cfg

from genloom.knowledge import read_source, split
from genloom.knowledge import examples as ex
from genloom.knowledge.grounding import Grounding, context_block
from genloom.knowledge.store import KnowledgeBase
from genloom.train import run as train_run

DIALOGUES = [
    "User: How do I reset my password?\nBot: Click Forgot password on the sign-in page.",
    "User: Do you ship abroad?\nBot: Yes, we deliver to forty countries.",
    "User: Can I pay by cheque?\nBot: No, only cards and bank transfers.",
    "User: hi\nBot: Hello!\nUser: When does the office open?\nBot: At nine in the morning, Monday to Friday.",
    "User: How do I delete my account?\nBot: Write to support and we close it within a week.",
    "User: What does error ZX-4411 mean?\nBot: The licence server cannot be reached: open port 7070.",
    "User: Is there a student discount?\nBot: Students pay half price with a valid card.",
    "User: Where is my parcel?\nBot: Follow the tracking link in your order e-mail.",
]


@pytest.fixture(scope="module")
def kb(tmp_path_factory) -> KnowledgeBase:
    return ex.dialogue_base(tmp_path_factory.mktemp("kb") / "dialogues", DIALOGUES)


def test_turns_keep_the_dialogue_history_and_skip_empty_turns():
    turns = ex.dialogue_turns(DIALOGUES[3:4] + ["User: \nBot: nothing asked"], ids=[3, 9])
    assert [(t.dialogue, t.history, t.question, t.reply) for t in turns] == [
        (3, (), "hi", "Hello!"),
        (3, ("User: hi", "Bot: Hello!"), "When does the office open?", "At nine in the morning, Monday to Friday."),
    ]


def test_every_example_holds_its_own_passage_among_distractors_in_the_grounding_layout(kb):
    g = Grounding(k=3)
    turns = ex.dialogue_turns(DIALOGUES)
    rows = ex.build_examples(turns, dict(enumerate(DIALOGUES)), kb, grounding=g, drop=0.0, copies=2, seed=5)
    assert len(rows) == 2 * len(turns)
    positions = set()
    for row, t in zip(rows, [t for t in turns for _ in range(2)]):
        docs = [line[len("Doc: "):] for line in row["prompt"].splitlines() if line.startswith("Doc: ")]
        assert len(docs) == g.k
        own = " ".join(DIALOGUES[t.dialogue].split())
        assert docs[row["answer_at"]] == own  # the answer's passage, where answer_at says
        assert docs.count(own) == 1  # and only once: distractors are other dialogues
        positions.add(row["answer_at"])
        # the layout is grounding's: earlier turns, the Doc lines, the question, the cue; then the reply
        passages = [DIALOGUES[t.dialogue] if i == row["answer_at"] else d for i, d in enumerate(docs)]
        head = "".join(f"{h}\n" for h in t.history)
        assert row["prompt"] == f"{head}{context_block(passages, g)}User: {t.question}\nBot:"
        assert row["text"] == f"{row['prompt']} {t.reply}"
    assert len(positions) > 1, "the answer's passage must not always sit at the same position"


def test_examples_are_deterministic_given_the_seed_and_drop_leaves_the_answer_out(kb):
    turns, own = ex.dialogue_turns(DIALOGUES), dict(enumerate(DIALOGUES))
    a = ex.build_examples(turns, own, kb, drop=0.5, copies=3, seed=11)
    assert a == ex.build_examples(turns, own, kb, drop=0.5, copies=3, seed=11)
    assert a != ex.build_examples(turns, own, kb, drop=0.5, copies=3, seed=12)
    dropped = ex.build_examples(turns, own, kb, drop=1.0, seed=11)
    for row, t in zip(dropped, turns):
        assert row["answer_at"] is None
        assert " ".join(DIALOGUES[t.dialogue].split()) not in row["prompt"]
        assert row["prompt"].count("Doc: ") == 3


def test_a_tiny_grounded_run_trains_from_the_data_config(tmp_path, monkeypatch):
    """`source = "chatterbot-grounded"`: the training run builds the examples (here from a handful of dialogues,
    the knowledge base of the training side only) and trains on them through the one loop."""
    monkeypatch.setattr(ex, "read_documents", lambda name: DIALOGUES * 2)
    data, out = tmp_path / "data", tmp_path / "run"
    cfg = make_cfg(data, out, max_steps=3)
    cfg.data.source, cfg.data.tokenizer, cfg.data.val_fraction = "chatterbot-grounded", "char", 0.25
    summary = train_run(cfg)
    meta = json.loads((data / "meta.json").read_text())
    assert meta["source"] == "chatterbot-grounded" and meta["grounding"]["k"] == 3
    assert meta["split"]["units"] == {"train": 12, "val": 4}
    train_side = [(DIALOGUES * 2)[i] for i in ex.split_indices(16, 0.25, 1337)[0]]
    assert meta["documents"]["train"] == ex.COPIES * sum(d.count("User:") for d in train_side)
    val = [json.loads(x) for x in (data / "examples.jsonl").read_text().splitlines()]
    assert val and all("Doc: " in r["prompt"] for r in val)
    assert summary["step"] == 3 and math.isfinite(summary["best_val_loss"])


# ---- the docs question set (bench/make_docs.py) ----

PAGE = """LS(1)                  User Commands                  LS(1)

NAME
       ls - list directory contents

DESCRIPTION
       List information about the FILEs.

       -a, --all
              do not ignore entries starting with .

       -s, --size
              print the allocated size of each file, in blocks. See also --block-size.

       -1     list one file per line

SEE ALSO
       dir(1)
"""


def make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "bench" / "make_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_man_page_options_become_sections_and_questions():
    import numpy as np

    md = make_docs()
    info = md.parse(PAGE)
    assert info["name"] == "ls - list directory contents"
    assert info["description"] == ["List information about the FILEs."]
    assert info["options"] == [("-a, --all", "do not ignore entries starting with ."),
                               ("-s, --size", "print the allocated size of each file, in blocks. See also --block-size."),
                               ("-1", "list one file per line")]
    qs = md.questions("ls", info, np.random.default_rng(0))
    assert qs == md.questions("ls", info, np.random.default_rng(0))
    by_id = {q["id"]: q for q in qs}
    assert set(by_id) == {"docs/ls/--all", "docs/ls/--size"}  # options with a long name only
    assert by_id["docs/ls/--size"]["reference"] == "print the allocated size of each file, in blocks"
    assert by_id["docs/ls/--size"]["question"] == "What does the --size option of ls do?"


def test_every_committed_docs_question_points_at_a_passage_that_holds_its_answer():
    rows = [json.loads(x) for x in (ROOT / "bench" / "data" / "docs-questions.jsonl").read_text().splitlines()]
    assert 50 <= len(rows) <= 100
    passages = {(p.source, p.heading): p.text for d in read_source(ROOT / "bench" / "data" / "docs") for p in split(d)}
    for r in rows:
        assert r["reference"] in passages[(r["source"], r["heading"])], r["id"]
