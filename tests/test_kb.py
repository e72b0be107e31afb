"""Knowledge bases (genloom.knowledge): splitting, BM25 / embedding / hybrid search, incremental updates,
persistence, and the `genloom kb` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_line_error, has_chatterbot

from genloom.cli import main
from genloom.errors import GenloomError
from genloom.knowledge import MAX_CHARS, Document, KnowledgeBase, KnowledgeBases, read_source, split
from genloom.knowledge import store as kb_store

FAQ = """# Accounts

To reset your password, click "Forgot password" on the sign-in page and follow the link we e-mail you.

## Deleting an account

Write to support and we close the account within a week.

```
# a comment in a code block, not a heading
```

# Errors

Error ZX-4411 means the licence server cannot be reached; check that the firewall lets port 7070 through.
"""
HOURS = "Our office opens at nine in the morning.\n\nIt closes at six in the evening, and on Sundays it stays shut.\n"
QA = ('{"question": "Do you ship abroad?", "answer": "Yes, we deliver to forty countries."}\n\n'
      '{"question": "Can I pay by cheque?", "answer": "No, only cards and bank transfers."}\n')


def write_docs(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "faq.md").write_text(FAQ)
    (folder / "hours.txt").write_text(HOURS)
    (folder / "qa.jsonl").write_text(QA)
    (folder / "logo.png").write_bytes(b"\x89PNG")  # skipped in a folder: not a document type
    return folder


class CountingEmbed:
    """genloom.embeddings.embed, counting the texts it is asked to embed."""

    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, texts):
        self.texts += list(texts)
        return self.real(texts)

    real = staticmethod(kb_store.embed)


@pytest.fixture
def counting(monkeypatch):
    c = CountingEmbed()
    monkeypatch.setattr(kb_store, "embed", c)
    return c


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    root = tmp_path_factory.mktemp("kb")
    kbs = KnowledgeBases(root / "kb")
    kbs.update("support", read_source(write_docs(root / "docs")), drop_missing=True)
    return kbs


# ---- splitting ----


def test_markdown_splits_at_headings_outside_code_fences_with_exact_offsets():
    doc = Document.from_text("faq.md", "markdown", FAQ)
    ps = split(doc)
    assert [p.heading for p in ps] == ["Accounts", "Accounts > Deleting an account", "Errors"]
    assert all(FAQ[p.start:p.end] == p.text for p in ps)
    assert "a comment in a code block" in ps[1].text  # the fenced '#' line stayed inside its section
    assert split(doc) == ps and len({p.id for p in ps}) == 3  # ids are stable and unique


def test_long_text_is_cut_by_size_at_sentence_ends_and_short_paragraphs_are_packed():
    text = "The quick fox jumps over the dog. " * 120 + "\n\nA short one.\n\nAnother short one.\n"
    ps = split(Document.from_text("long.txt", "text", text))
    assert len(ps) == 5 and all(len(p.text) <= MAX_CHARS for p in ps)
    assert all(p.text.endswith(".") for p in ps)  # cut after a sentence, never inside a word
    assert ps[-1].text.endswith("A short one.\n\nAnother short one.")  # packed with the rest of the long one
    assert all(text[p.start:p.end] == p.text for p in ps)


def test_jsonl_gives_one_passage_per_question_answer_pair():
    ps = split(Document.from_text("qa.jsonl", "jsonl", QA))
    assert [(p.heading, p.text) for p in ps] == [("Do you ship abroad?", "Yes, we deliver to forty countries."),
                                                 ("Can I pay by cheque?", "No, only cards and bank transfers.")]
    assert ps[0].indexed_text() == "Do you ship abroad?\nYes, we deliver to forty countries."
    # a grounded prompt shows the pair as a one-turn dialogue; other passages as their text
    assert ps[0].prompt_text() == "User: Do you ship abroad? Bot: Yes, we deliver to forty countries."
    md = split(Document.from_text("faq.md", "markdown", "# Help\n\n## Errors\n\nZX-1 means no licence.\n"))[-1]
    assert md.prompt_text() == "User: Errors Bot: ZX-1 means no licence."  # a reply to its heading
    assert split(Document.from_text("n.txt", "text", "Plain words.\n"))[0].prompt_text() == "Bot: Plain words."
    option = "### -f, --force\n\n`cp -f, --force`: remove it and try again\n"  # layouts the starter learnt stay
    dialogue = "User: hi\nBot: Hello!"
    for text, kind in ((option, "markdown"), (dialogue, "text")):
        p = split(Document.from_text("x.md" if kind == "markdown" else "x.txt", kind, text))[0]
        assert p.prompt_text() == p.text
    with pytest.raises(GenloomError, match=r"bad.jsonl:2: expected a JSON object with .*question"):
        split(Document.from_text("bad.jsonl", "jsonl", QA.splitlines()[0] + '\n{"q": "x"}\n'))


@pytest.mark.skipif(not has_chatterbot(), reason="pip install chatterbot-corpus")
def test_chatterbot_by_name_is_one_passage_per_dialogue():
    (doc,) = read_source("chatterbot")
    ps = split(doc)
    assert len(ps) > 2000 and all(p.text.startswith("User: ") and "\nBot: " in p.text for p in ps[:50])


def test_bad_documents_are_one_clear_error(tmp_path):
    (tmp_path / "empty.md").write_text("  \n\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG")
    for source, message in [("empty.md", "is empty"), ("latin1.txt", "not UTF-8"),
                            ("x.pdf", r"unsupported file type '.pdf'; use one of .jsonl/.markdown/.md/.text/.txt"),
                            ("images", "no documents in folder"), ("missing", "chatterbot")]:
        with pytest.raises(GenloomError, match=message):
            read_source(tmp_path / source if source != "missing" else str(tmp_path / source))


# ---- search ----


def test_bm25_finds_an_exact_rare_word(kb):
    hits = kb.search("support", "ZX-4411", k=3, mode="bm25")
    assert hits[0].passage.heading == "Errors" and hits[0].passage.source == "faq.md"
    assert len(hits) == 1  # no other passage holds the word: BM25 returns only what matches


def test_embeddings_find_a_paraphrase_that_shares_no_word(kb):
    query = "I can't remember my login secret"
    bm25 = kb.search("support", query, k=3, mode="bm25")
    assert "Accounts" not in [h.passage.heading for h in bm25]  # no word in common with the answer
    hits = kb.search("support", query, k=3, mode="embeddings")
    assert hits[0].passage.heading == "Accounts" and hits[0].cosine > 0.3
    assert [h.rank for h in hits] == [1, 2, 3] and hits[0].score >= hits[1].score >= hits[2].score


def test_hybrid_fuses_both_rankings(kb):
    assert kb.search("support", "ZX-4411", k=1)[0].passage.heading == "Errors"
    top = kb.search("support", "international delivery", k=2)
    assert top[0].passage.heading == "Do you ship abroad?" and 0 < top[0].score <= 1
    assert top[0].cosine is not None and top[0].bm25 is not None
    with pytest.raises(GenloomError, match="unknown search mode 'dense'; choose one of bm25, embeddings, hybrid"):
        kb.search("support", "x", mode="dense")
    with pytest.raises(GenloomError, match="no knowledge base 'nope'.*choose one of support"):
        kb.search("nope", "x")


# ---- updates and persistence ----


def test_update_reembeds_only_changed_and_new_files_and_drops_removed_ones(tmp_path, counting):
    docs = write_docs(tmp_path / "docs")
    kbs = KnowledgeBases(tmp_path / "kb")
    first = kbs.update("s", read_source(docs), drop_missing=True)
    assert sorted(first.added) == ["faq.md", "hours.txt", "qa.jsonl"] and first.embedded == len(counting.texts) == 6
    counting.texts.clear()
    again = kbs.update("s", read_source(docs), drop_missing=True)
    assert again.embedded == 0 and counting.texts == [] and len(again.unchanged) == 3
    (docs / "hours.txt").write_text("We are open around the clock, every day of the year.\n")
    (docs / "qa.jsonl").unlink()
    (docs / "new.md").write_text("# Returns\n\nSend it back within 30 days.\n")
    change = kbs.update("s", read_source(docs), drop_missing=True)
    assert (change.added, change.changed, change.removed) == (["new.md"], ["hours.txt"], ["qa.jsonl"])
    assert sorted(counting.texts) == ["Returns\n# Returns\n\nSend it back within 30 days.",
                                      "We are open around the clock, every day of the year."]
    kb = KnowledgeBase.open(tmp_path / "kb" / "s")
    assert {p.doc for p in kb.passages} == {"faq.md", "hours.txt", "new.md"} and len(kb.passages) == 5
    # the kept rows are the old vectors, the new rows the new texts' embeddings
    fresh = kb_store.embed([p.indexed_text() for p in kb.passages])
    assert np.allclose(kb.vectors, fresh, atol=1e-5)
    assert kbs.search("s", "around the clock", k=1)[0].passage.doc == "hours.txt"


def test_persisted_base_reloads_the_same_without_pickle(kb, tmp_path):
    before = [(h.passage.id, round(h.score, 5)) for h in kb.search("support", "when do you open?", k=3)]
    fresh = KnowledgeBases(kb.root)  # a new process's view: everything from disk
    assert [(h.passage.id, round(h.score, 5)) for h in fresh.search("support", "when do you open?", k=3)] == before
    folder = kb.path("support")
    manifest = json.loads((folder / "manifest.json").read_text())
    gen = folder / manifest["generation"]
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [manifest["generation"]]
    assert np.load(gen / "embeddings.npy", allow_pickle=False).shape == (manifest["passages"], 384)
    assert not [p for p in gen.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt")]
    assert set(manifest["documents"]) == {"faq.md", "hours.txt", "qa.jsonl"}
    assert len(manifest["documents"]["faq.md"]["sha256"]) == 64


def test_a_base_recreated_by_another_process_is_reloaded(tmp_path):
    """Two server replicas on one data directory: one deletes a base and creates another of the same name (its
    generation numbering starts over); the other, which had the old one loaded, must answer from the new one."""
    other, mine = KnowledgeBases(tmp_path / "kb"), KnowledgeBases(tmp_path / "kb")
    mine.update("shop", read_source(write_docs(tmp_path / "old")), drop_missing=True)
    assert "nine" in other.search("shop", "office opens", k=1, mode="bm25")[0].passage.text
    mine.delete("shop")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "hours.txt").write_text("The office opens at noon on weekdays.\n")
    mine.update("shop", read_source(tmp_path / "new"), drop_missing=True)
    assert other.get("shop").generation == "g000001"  # the same generation name as the base it replaced
    assert "noon" in other.search("shop", "office opens", k=1, mode="bm25")[0].passage.text


def test_a_failed_update_leaves_the_base_as_it_was(tmp_path, monkeypatch):
    kbs = KnowledgeBases(tmp_path / "kb")
    kbs.update("s", [Document.from_text("a.txt", "text", "alpha beta gamma")])
    gen = kbs.get("s").generation

    def broken(texts):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kb_store, "embed", broken)
    with pytest.raises(OSError):
        kbs.update("s", [Document.from_text("b.txt", "text", "delta")])
    assert KnowledgeBases(tmp_path / "kb").get("s").generation == gen
    assert [p.name for p in (tmp_path / "kb" / "s").iterdir() if p.name.startswith(".tmp")] == []


# ---- the CLI ----


def test_cli_create_search_list_add(tmp_path, capsys):
    docs = write_docs(tmp_path / "docs")
    root = str(tmp_path / "kb")

    def cli(*args):
        with pytest.raises(SystemExit) as e:
            main([*args, "--dir", root])
        out, err = capsys.readouterr()
        return e.value.code, out, err

    code, out, _ = cli("kb", "create", "docs", "--from", str(docs))
    assert code == 0 and "3 added" in out and "6 passages embedded" in out
    code, out, _ = cli("kb", "search", "docs", "ZX-4411", "-k", "1", "--json")
    assert code == 0 and json.loads(out)[0]["heading"] == "Errors"
    (tmp_path / "more.md").write_text("# Warranty\n\nTwo years on every product.\n")
    code, out, _ = cli("kb", "add", "docs", str(tmp_path / "more.md"))
    assert code == 0 and "1 added" in out and "3 unchanged" in out
    code, out, _ = cli("kb", "list")
    assert code == 0 and out.startswith("docs  4 documents, 7 passages")
    code, out, err = cli("kb", "add", "nope", str(tmp_path / "more.md"))
    assert code == 2 and err.strip() == f"genloom: error: no knowledge base 'nope' in {root}; choose one of docs"


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, run_main):
    """In-process (genloom.cli.main): tests/test_cli.py's test_bad_input_in_a_real_process covers the real process."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "a.csv").write_text("a,b\n")
    cases = [
        (["kb", "search", "nope", "hello"], "no knowledge base 'nope'"),
        (["kb", "create", "x", "--from", tmp_path / "empty.txt"], "is empty"),
        (["kb", "create", "x", "--from", tmp_path / "a.csv"], "unsupported file type '.csv'; use one of"),
        (["kb", "create", "../x", "--from", tmp_path / "a.csv"], "invalid knowledge base name '../x'"),
        (["kb", "create", "x", "--from", tmp_path / "missing"], "no file or folder"),
    ]
    for args, message in cases:
        assert message in assert_one_line_error(*run_main(*args, "--dir", tmp_path / "kb"))
    assert not (tmp_path / "kb").exists() or not any((tmp_path / "kb").iterdir())
