"""Grounded chat training data (genloom.knowledge.examples), a tiny training run on it, and the docs question set
of bench/make_docs.py."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from conftest import ROOT, make_cfg

from genloom.data.text import TokenData
from genloom.data.tokenizers import train_tokenizer
from genloom.errors import GenloomError
from genloom.knowledge import examples as ex
from genloom.knowledge import manpages, read_source, split
from genloom.knowledge.grounding import NOT_FOUND, Grounding, context_block
from genloom.knowledge.store import KnowledgeBase
from genloom.models.gpt import GPT, GPTConfig
from genloom.objectives import LMTask
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


def test_the_doc_lines_are_the_retrieved_passages_in_order_with_the_answer_where_retrieval_ranks_it(kb):
    g = Grounding(k=3)
    turns = ex.dialogue_turns(DIALOGUES)
    rows = ex.build_examples(turns, dict(enumerate(DIALOGUES)), kb, grounding=g, drop=0.0, copies=2, seed=5,
                             shuffle=0.0)
    assert len(rows) == 2 * len(turns)
    for row, t in zip(rows, [t for t in turns for _ in range(2)]):
        docs = [line[len("Doc: "):] for line in row["prompt"].splitlines() if line.startswith("Doc: ")]
        own = " ".join(DIALOGUES[t.dialogue].split())
        hits = [" ".join(h.passage.text.split()) for h in kb.search(t.question, k=g.k + 4, mode="hybrid")]
        assert docs == hits[: g.k]  # the base holds every dialogue: retrieval order, nothing moved
        assert docs[row["answer_at"]] == own == hits[row["answer_at"]]
        # the layout is grounding's: earlier turns, the Doc lines, the question, the cue; then the reply
        passages = [DIALOGUES[t.dialogue] if i == row["answer_at"] else d for i, d in enumerate(docs)]
        head = "".join(f"{h}\n" for h in t.history)
        assert row["prompt"] == f"{head}{context_block(passages, g)}User: {t.question}\nBot:"
        assert row["text"] == f"{row['prompt']} {t.reply}" and row["reply"] == t.reply


def test_an_answer_retrieval_misses_is_put_in_and_the_order_of_the_others_kept():
    rng = np.random.default_rng(0)
    hits = ["User: a\nBot: 1", "User: b\nBot: 2", "User: c\nBot: 3", "User: d\nBot: 4"]
    assert ex.ranked(hits, hits[1], "b", 3, rng, 0.0, 0.0) == (hits[:3], 1)
    seen = set()
    for _ in range(30):
        passages, at = ex.ranked(hits, "User: q\nBot: mine", "q", 3, rng, 0.0, 0.0)
        assert passages.pop(at) == "User: q\nBot: mine" and passages == hits[:2]
        seen.add(at)
    assert seen == {0, 1, 2}
    twin = "User: b\nBot: another reply"  # holds the same user turn with another reply: never a distractor
    assert ex.ranked([twin] + hits, hits[1], "b", 3, rng, 0.0, 0.0) == (hits[:3], 1)
    assert ex.ranked([twin] + hits, hits[1], "b", 3, rng, 1.0) == ([hits[0], hits[2], hits[3]], None)


def test_shuffled_examples_move_the_answer_to_any_rank_and_keep_the_others_in_order():
    """With `shuffle` the own passage leaves its retrieved rank for a random one (the model must check the question
    against every Doc line, not only trust rank 1); the other passages stay in retrieval order."""
    rng = np.random.default_rng(1)
    hits = ["User: a\nBot: 1", "User: b\nBot: 2", "User: c\nBot: 3", "User: d\nBot: 4"]
    seen = set()
    for _ in range(40):
        passages, at = ex.ranked(hits, hits[0], "a", 3, rng, 0.0, 1.0)
        assert passages.pop(at) == hits[0] and passages == hits[1:3]
        seen.add(at)
    assert seen == {0, 1, 2}
    kept = [ex.ranked(hits, hits[0], "a", 3, rng, 0.0, 0.5)[1] for _ in range(400)]
    assert 0.55 < kept.count(0) / 400 < 0.8  # half stay first, a third of the moved half land first again


def test_examples_are_deterministic_given_the_seed_and_drop_leaves_the_answer_out_with_not_found(kb):
    turns, own = ex.dialogue_turns(DIALOGUES), dict(enumerate(DIALOGUES))
    a = ex.build_examples(turns, own, kb, drop=0.5, copies=3, seed=11)
    assert a == ex.build_examples(turns, own, kb, drop=0.5, copies=3, seed=11)
    assert a != ex.build_examples(turns, own, kb, drop=0.5, copies=3, seed=12)
    dropped = ex.build_examples(turns, own, kb, drop=1.0, seed=11)
    for row, t in zip(dropped, turns):
        assert row["answer_at"] is None and row["reply"] == NOT_FOUND
        assert " ".join(DIALOGUES[t.dialogue].split()) not in row["prompt"]
        assert row["prompt"].count("Doc: ") == 3


POOL = [f"the {w} of number {i} went home early." for i, w in enumerate(
    ["cat", "dog", "bird", "horse", "fish", "sheep", "goat", "mouse", "lion", "bear", "wolf", "fox"] * 3)]


def test_synthetic_copy_examples_reply_with_the_answering_docs_text_copied_exactly():
    g = Grounding(k=3)
    rows = ex.copy_examples(POOL, 400, 3, g, drop=0.0)
    assert rows == ex.copy_examples(POOL, 400, 3, g, drop=0.0) and len(rows) > 300
    first = same_name = options = 0
    for r in rows:
        docs = [line[len("Doc: "):] for line in r["prompt"].splitlines() if line.startswith("Doc: ")]
        assert len(docs) == 3 and r["reply"] in docs[r["answer_at"]]
        question = r["prompt"].split("\nUser: ")[-1][: -len("\nBot:")]
        if question.startswith("What does the --"):  # option-shaped: the one section of that option answers
            name, cmd = question.split()[3], question.split()[6]
            assert [d.startswith(f"`{cmd} ") and f"{name}`:" in d for d in docs] == [i == r["answer_at"]
                                                                                 for i in range(3)]
            same_name += all(f"{name}`:" in d for d in docs)
            options += 1
            assert r["reply"] == manpages.first_sentence(docs[r["answer_at"]].split("`: ", 1)[1])
        else:  # dialogue-shaped: the reply is the Bot turn right after the question in that Doc
            assert f"User: {question} Bot: {r['reply']}" in docs[r["answer_at"]]
        first += r["answer_at"] == 0
    assert 0.6 < first / len(rows) < 0.85  # TOP_FIRST, plus a third of the rest
    assert options > 100 and 0.1 < same_name / options < 0.5  # SAME_NAME of them: one option of several commands
    gone = ex.copy_examples(POOL, 50, 3, g, drop=1.0)
    assert all(r["reply"] == NOT_FOUND and r["answer_at"] is None for r in gone)


def test_sentences_are_short_lines_of_the_offline_corpora(monkeypatch):
    texts = {"fortunes": ["Go home now. This sentence is much too long to be used as a copy target, it has words."
                          "\n\t-- Someone: a quote"],
             "kjv": ["Genesis 1\n1 In the beginning God created the heaven and the earth.\n2 And it was so."]}
    monkeypatch.setattr(ex, "read_documents", texts.get)
    assert sorted(ex.sentences()) == ["And it was so.", "Go home now.",
                                      "In the beginning God created the heaven and the earth."]


def test_copy_warmup_examples_hold_only_the_own_passage_and_no_distractor_repeats_the_question(tmp_path):
    """The copy warm-up (easy): the answer's own passage as the only Doc line, the reply a span of it; and a
    passage holding the same user turn with another reply (chatterbot repeats questions) is never a distractor:
    the question must single out the passage to copy from."""
    twin = "User: Do you ship abroad?\nBot: Only within the country, sorry."
    dialogues = DIALOGUES + [twin]
    kb = ex.dialogue_base(tmp_path / "kb", dialogues)
    turns = ex.dialogue_turns(DIALOGUES)
    rows = ex.build_examples(turns, dict(enumerate(dialogues)), kb, drop=0.0, copies=2, seed=3, easy=1)
    assert len(rows) == 3 * len(turns)
    for i, t in enumerate(turns):
        easy, *hard = rows[3 * i: 3 * i + 3]
        own = " ".join(DIALOGUES[t.dialogue].split())
        docs = [line[len("Doc: "):] for line in easy["prompt"].splitlines() if line.startswith("Doc: ")]
        assert docs == [own] and easy["answer_at"] == 0 and t.reply in docs[0]
        for row in hard:
            assert row["prompt"].count("Doc: ") == 3 and row["answer_at"] is not None
            if t.question == "Do you ship abroad?":  # the twin never stands in for its answer
                assert " ".join(twin.split()) not in row["prompt"]
    shipping = [r for r in rows if r["prompt"].endswith("User: Do you ship abroad?\nBot:")]
    assert shipping and all(r["prompt"].count("Do you ship abroad?") == 2 for r in shipping)  # own Doc + question
    plain = ex.build_examples(turns, dict(enumerate(dialogues)), kb, drop=0.0, seed=3)  # easy=0: no warm-up
    assert len(plain) == len(turns) and all(r["prompt"].count("Doc: ") == 3 for r in plain)


def test_a_tiny_grounded_run_trains_from_the_data_config(tmp_path, monkeypatch):
    """`source = "chatterbot-grounded"`: the training run builds the examples (here from a handful of dialogues,
    the knowledge base of the training side only) and trains on them through the one loop."""
    monkeypatch.setattr(ex, "read_documents", lambda name: DIALOGUES * 2)
    data, out = tmp_path / "data", tmp_path / "run"
    cfg = make_cfg(data, out, max_steps=3)
    cfg.data.source, cfg.data.tokenizer, cfg.data.val_fraction = "chatterbot-grounded", "char", 0.25
    cfg.data.loss_mask = True
    summary = train_run(cfg)
    meta = json.loads((data / "meta.json").read_text())
    assert meta["source"] == "chatterbot-grounded" and meta["grounding"]["k"] == 3
    assert meta["split"]["units"] == {"train": 12, "val": 4}
    train_side = [(DIALOGUES * 2)[i] for i in ex.split_indices(16, 0.25, 1337)[0]]
    assert meta["documents"]["train"] == (ex.COPIES + ex.EASY) * sum(d.count("User:") for d in train_side)
    val = [json.loads(x) for x in (data / "examples.jsonl").read_text().splitlines()]
    assert val and all("Doc: " in r["prompt"] for r in val)
    task = LMTask(TokenData(data), 64, 4, loss_mask=True)
    assert int(task.masks["train"].sum()) == meta["tokens"]["targets"] < meta["tokens"]["train"] // 3
    assert len(task.starts["train"]) == meta["documents"]["train"]
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


def test_man_page_options_become_sections_and_questions():
    info = manpages.parse(PAGE)
    assert info["name"] == "ls - list directory contents"
    assert info["description"] == ["List information about the FILEs."]
    assert info["options"] == [("-a, --all", "do not ignore entries starting with ."),
                               ("-s, --size", "print the allocated size of each file, in blocks. See also --block-size."),
                               ("-1", "list one file per line")]
    qs = manpages.pick_questions("ls", info, np.random.default_rng(0), 2)
    assert qs == manpages.pick_questions("ls", info, np.random.default_rng(0), 2)
    by_id = {q["id"]: q for q in qs}
    assert set(by_id) == {"docs/ls/--all", "docs/ls/--size"}  # options with a long name only
    assert by_id["docs/ls/--size"]["reference"] == "print the allocated size of each file, in blocks"
    assert by_id["docs/ls/--size"]["question"] == "What does the --size option of ls do?"


def test_training_pages_leave_the_benchmark_pages_out(tmp_path):
    for name in ("ls.1.gz", "rsync.1.gz", "zip.1", "ls.1posix.gz", "Foo::Bar.3pm.gz", "tar.1.gz", "awk.1.gz"):
        (tmp_path / name).write_bytes(b"")
    on_path = {"ls", "rsync", "zip", "tar", "awk"}.__contains__  # Foo::Bar is a library's page, not a command
    assert manpages.training_pages(10, tmp_path, on_path) == ["awk", "rsync", "zip"]
    assert manpages.training_pages(2, tmp_path, on_path) == ["awk", "zip"]  # spread over the names
    assert manpages.training_pages(10, tmp_path, lambda n: n != "zip") == ["awk", "rsync"]
    assert set(manpages.HELD_OUT) >= {"ls", "tar"}


def test_a_held_out_page_under_another_name_is_the_same_page():
    ls = manpages.parse(PAGE)
    vdir = {"name": "vdir - list directory contents", "options": ls["options"][:2] + [("--help", "display help")]}
    gunzip = {"name": ls["name"], "options": [("-x", "other")]}
    own = {"name": "rsync - sync", "options": [("-a, --all", "copy everything"), ("--help", "display help"),
                                                ("-s, --size", ("print the allocated size of each file, in blocks. "
                                                                "See also --block-size."))]}
    assert manpages.same_page(vdir, [ls]) and manpages.same_page(gunzip, [ls])
    assert manpages.same_page(own, [ls])  # 1 of its 2 options (--help aside) is ls's, word for word
    own["options"].append(("-z", "compress"))
    assert not manpages.same_page(own, [ls]) and not manpages.same_page(own, [])


def page(cmd: str, options: list[tuple[str, str]]) -> dict:
    return {"name": f"{cmd} - a tool", "description": [f"{cmd} does things."], "options": options}


def test_manpage_examples_put_the_options_own_section_in_the_prompt_and_split_by_page(tmp_path):
    pages = {f"tool{i}": page(f"tool{i}", [(f"-a, --alpha{i}", f"turn on alpha mode number {i} now."),
                                            (f"-b, --beta{i}", f"write beta files for case {i} please.")])
             for i in range(8)}
    out = ex.manpage_examples(pages, 0.25, 7, tmp_path / "kb", drop=0.0, copies=1)
    assert out["pages"] == {"train": 6, "val": 2}
    rows = out["train"] + out["val"]
    assert len(rows) == 16 + 12 * ex.EASY  # the copy warm-up: training side only
    assert sum(r["prompt"].count("Doc: ") == 1 for r in out["train"]) == 12 * ex.EASY
    assert all(r["prompt"].count("Doc: ") == 3 for r in out["val"])
    for r in rows:
        m = re.match(r"What does the --(alpha|beta)(\d) option of tool(\d) do\?", r["prompt"].split("User: ")[-1])
        assert m and m.group(2) == m.group(3)
        docs = [line for line in r["prompt"].splitlines() if line.startswith("Doc: ")]
        own = docs[r["answer_at"]]
        assert f"`tool{m.group(3)} -" in own and r["reply"] in own  # the section whose text answers
        assert r["reply"] == (f"turn on alpha mode number {m.group(2)} now" if m.group(1) == "alpha"
                              else f"write beta files for case {m.group(2)} please")
    val_pages = {r["prompt"].split(" option of ")[-1] for r in out["val"]}
    train_pages = {r["prompt"].split(" option of ")[-1] for r in out["train"]}
    assert len(val_pages) == 2 and not val_pages & train_pages


def test_encoded_examples_mark_the_reply_and_its_end_of_text_only():
    rows = [{"prompt": "Doc: a b\nUser: hi\nBot:", "reply": "Hello!"}, {"prompt": "User: x\nBot:", "reply": "yz"}]
    tok = train_tokenizer("char", [r["prompt"] + " " + r["reply"] + "\n" for r in rows], 0)
    ids, mask, starts = ex.encode_examples(tok, rows)
    assert len(ids) == len(mask) and starts.tolist() == [0, len(tok.encode(rows[0]["prompt"] + " Hello!")) + 2]
    sep = tok.encode("\n\n")  # a char vocabulary has no end-of-text: a blank line separates
    assert tok.decode(ids[starts[1]:].tolist()) == "User: x\nBot: yz\n\n"
    targets = [tok.decode([int(i)]) for i, m in zip(ids, mask) if m]
    assert "".join(targets) == " Hello!\n\n yz\n\n" and len(sep) == 2
    asked, marks, _ = ex.encode_examples(tok, rows, question_loss=True)  # the last user turn is a target too
    assert asked.tolist() == ids.tolist()
    assert "".join(tok.decode([int(i)]) for i, m in zip(asked, marks) if m) == " hi\nBot: Hello!\n\n x\nBot: yz\n\n"


# ---- the reply-only loss (LMTask data.loss_mask) ----

def masked_folder(tmp_path, rows):
    tok = train_tokenizer("char", [r["prompt"] + " " + r["reply"] for r in rows], 0)
    ids, mask, starts = ex.encode_examples(tok, rows)
    for side in ("train", "val"):
        (tmp_path / f"{side}.bin").write_bytes(ids.tobytes())
        (tmp_path / f"{side}.mask.bin").write_bytes(mask.tobytes())
        (tmp_path / f"{side}.starts.bin").write_bytes(starts.tobytes())
    tok.save(tmp_path / "tokenizer.json")
    (tmp_path / "meta.json").write_text(json.dumps({"tokenizer": "char", "dtype": str(ids.dtype)}))
    return TokenData(tmp_path), ids, mask, starts


ROWS = [{"prompt": f"Doc: q{i} {'x' * i} a{i}\nUser: q{i}\nBot:", "reply": f"a{i}!"} for i in range(12)]


def test_masked_batches_start_at_an_example_and_target_only_replies_of_whole_examples(tmp_path):
    rows = ROWS + [{"prompt": "Doc: " + "long " * 12 + "\nUser: q\nBot:", "reply": "end!"}]  # > the window
    data, ids, mask, starts = masked_folder(tmp_path, rows)
    T = 40
    task = LMTask(data, T, 64, loss_mask=True)
    x, y = task.batch("train", torch.Generator().manual_seed(0))
    picks = torch.randint(len(starts), (64,), generator=torch.Generator().manual_seed(0)).tolist()
    bounds = starts.tolist() + [len(ids)]
    assert len(set(picks)) > 5 and len(rows) - 1 in picks
    for j, xr, yr in zip(picks, x.tolist(), y.tolist()):
        i = bounds[j]
        if bounds[j + 1] - i > T + 1:  # too long: the window holds its end, reply included
            i = bounds[j + 1] - T - 1
            whole = bounds[j + 1]
        else:  # the examples that fit whole; the one cut at the window's end gets no targets
            whole = max(b for b in bounds if b <= i + T + 1)
        n = min(T, len(ids) - 1 - i)
        assert xr[:n] == ids[i: i + n].tolist()
        assert yr == [int(ids[i + 1 + t]) if i + 1 + t < whole and mask[i + 1 + t] else -1 for t in range(T)]
        assert data.tokenizer.decode([v for v in yr if v != -1]).startswith(" " + rows[j]["reply"])
    plain = LMTask(data, T, 64)  # the default: every next token is a target, windows anywhere
    _, y_all = plain.batch("train", torch.Generator().manual_seed(0))
    assert (y_all != -1).all()


def test_the_masked_loss_is_the_reply_tokens_cross_entropy(tmp_path):
    data, *_ = masked_folder(tmp_path, ROWS)
    task = LMTask(data, 40, 8, loss_mask=True)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=40, n_layer=1, n_head=2, n_embd=16))
    model.eval()
    x, y = task.batch("train", torch.Generator().manual_seed(1))
    logits, _ = model(x, x)  # logits for every position
    keep = y != -1
    want = torch.nn.functional.cross_entropy(logits[keep].float(), y[keep])
    assert torch.allclose(task.loss(model, (x, y)), want, atol=1e-5)
    assert keep.float().mean() < 0.5  # the prompts (most tokens) are not targets


def test_loss_mask_without_marks_is_a_clear_error(tmp_path):
    data, *_ = masked_folder(tmp_path, ROWS)
    (tmp_path / "train.mask.bin").unlink()
    with pytest.raises(GenloomError, match="loss_mask"):
        LMTask(data, 40, 8, loss_mask=True)


def test_every_committed_docs_question_points_at_a_passage_that_holds_its_answer():
    rows = [json.loads(x) for x in (ROOT / "bench" / "data" / "docs-questions.jsonl").read_text().splitlines()]
    assert 50 <= len(rows) <= 100
    passages = {(p.source, p.heading): p.text for d in read_source(ROOT / "bench" / "data" / "docs") for p in split(d)}
    for r in rows:
        assert r["reference"] in passages[(r["source"], r["heading"])], r["id"]


# ---- bench/grounded.py decodes as a user gets it: the default text watermark on, and again off ----

def test_the_grounded_bench_decodes_with_the_default_watermark_and_without():
    import importlib.util

    spec = importlib.util.spec_from_file_location("grounded_bench", ROOT / "bench" / "grounded.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.MARKS["on"].on and not bench.MARKS["off"].on
    from genloom.checkpoints import load_model

    lm = load_model(ROOT / "models" / "chat")
    prompts = [f"User: {q}\nBot:" for q in ("hi", "What is AI?", "Tell me a joke", "Do you like books?",
                                              "Who are you?", "What is your name?", "Are you sentient?", "bye")]
    on, off = ([c.text for c in bench.complete(lm, prompts, bench.MARKS[m])] for m in ("on", "off"))
    assert on == [c.text for c in bench.complete(lm, prompts, bench.MARKS["on"])]  # greedy, a fixed key: the same
    assert on != off  # the green-list bias moves some greedy choices
