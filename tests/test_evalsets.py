"""Held-out eval sets: the chat set is exactly the validation side of `genloom data chatterbot`, the EN-ES
translation set the chapters the `bible-en-es` corpus leaves out; both are deterministic."""

from __future__ import annotations

import shutil

import pytest

from conftest import has_chatterbot
from genloom.errors import GenloomError


def has_sword() -> bool:
    if shutil.which("diatheke") is None:
        return False
    from genloom.data.bible import SPANISH, sword_modules

    return SPANISH in sword_modules()


needs_chatterbot = pytest.mark.skipif(not has_chatterbot(), reason="pip install chatterbot-corpus")
needs_sword = pytest.mark.skipif(not has_sword(), reason="apt-get install diatheke sword-text-sparv bible-kjv")


@pytest.fixture(scope="module")
def chat_set():
    from genloom.data.evalsets import chat_eval_set

    return chat_eval_set()


@needs_chatterbot
def test_chat_set_is_the_validation_side_of_the_default_split(chat_set):
    from genloom.data.text import read_documents, split_documents, split_indices

    docs = read_documents("chatterbot")
    train_idx, val_idx = split_indices(len(docs), 0.05, 1337)
    assert split_documents(docs, 0.05, 1337)[1] == [docs[i] for i in val_idx]  # the split `genloom data` uses
    pairs = chat_set
    used = {int(p["id"].split("/")[1]) for p in pairs}
    assert used and used <= set(val_idx) and not used & set(train_idx)
    assert used == {i for i in val_idx if "\nBot: " in docs[i]}  # every held-out dialogue with a reply
    for p in pairs:
        doc = docs[int(p["id"].split("/")[1])]
        assert p["prompt"].startswith("User: ") and p["prompt"].endswith("\nBot:")
        assert doc.startswith(p["prompt"] + " " + p["reference"])  # the training text's own layout
    assert len({p["id"] for p in pairs}) == len(pairs)


@needs_chatterbot
def test_chat_set_is_deterministic_and_follows_the_seed(chat_set):
    from genloom.data.evalsets import chat_eval_set

    a = chat_set
    assert a == chat_eval_set()
    other = chat_eval_set(seed=7)
    assert {p["id"] for p in other} != {p["id"] for p in a}
    short = chat_eval_set(history=False)
    assert len(short) == len(a) and all(p["prompt"].count("User:") == 1 for p in short)
    assert any(p["prompt"].count("User:") > 1 for p in a)  # multi-turn dialogues keep their history
    unseen = chat_eval_set(unseen_only=True)
    assert 0 < len(unseen) < len(a) and all(p in a for p in unseen)  # the corpus repeats dialogues
    from genloom.data.text import read_documents, split_documents

    train_text = "\n".join(split_documents(read_documents("chatterbot"), 0.05, 1337)[0])
    assert not any(f"{p['prompt']} {p['reference']}" in train_text for p in unseen)
    assert any(f"{p['prompt']} {p['reference']}" in train_text for p in a)
    sub = chat_eval_set(limit=10)
    assert len(sub) == 10 and sub == chat_eval_set(limit=10) and all(p in a for p in sub)


def test_write_and_read_jsonl(tmp_path):
    from genloom.data.evalsets import read_jsonl, write_jsonl

    pairs = [{"prompt": "EN: In the beginning\nES:", "reference": "EN el principio crió", "id": "x/1"},
             {"prompt": "User: hi\nBot:", "reference": "¿qué tal? 你好", "id": "x/2"}]
    path = write_jsonl(pairs, tmp_path / "sets" / "eval.jsonl")
    assert read_jsonl(path) == pairs
    assert path.read_text(encoding="utf-8").count("\n") == 2 and "你好" in path.read_text(encoding="utf-8")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p"}\n', encoding="utf-8")
    with pytest.raises(GenloomError, match="bad.jsonl:1"):
        read_jsonl(tmp_path / "bad.jsonl")
    with pytest.raises(GenloomError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_clean_strips_markup():
    from genloom.data.bible import clean

    assert clean("De todo árbol del huerto comerás <H0398>;") == "De todo árbol del huerto comerás;"
    assert clean('<w lemma="H2416">hay vida</w>, <w>toda</w><milestone type="line"/>') == "hay vida, toda"
    assert clean('Amen.<note type="x">a footnote</note>  so') == "Amen. so"
    assert clean('said, “<w>Let</w> <w>there</w> <w>be</w> <w>light</w>,” and') == "said, “Let there be light,” and"


def test_missing_diatheke_names_the_packages(monkeypatch):
    from genloom.data import bible

    monkeypatch.setattr(bible.shutil, "which", lambda name: None)
    with pytest.raises(GenloomError, match="diatheke sword-text-sparv sword-text-web"):
        bible.parallel_verses("kjv", cache_dir="/nonexistent-genloom-cache")


@needs_sword
def test_missing_module_and_unknown_english():
    from genloom.data.bible import english_verses, sword_verses

    with pytest.raises(GenloomError, match="NoSuchBible is not installed.*sword-text-sparv"):
        sword_verses("NoSuchBible", "Gen 1:1")
    with pytest.raises(GenloomError, match="unknown English Bible 'nasb'; choose one of kjv, web"):
        english_verses("nasb")


@needs_sword
def test_sword_parse_of_a_few_verses():
    from genloom.data.bible import sword_verses

    es = sword_verses("spaRV1909eb", "Gen 2:16-17")
    assert list(es) == ["Genesis 2:16", "Genesis 2:17"]
    assert es["Genesis 2:16"].endswith("del huerto comerás;")  # a Strong's number sits there in the module


@pytest.fixture(scope="module")
def verses():
    """The full aligned KJV/RV1909 text, parsed once into the user's cache (GENLOOM_CACHE or ~/.cache/genloom)."""
    from genloom.data.bible import parallel_verses, sword_modules

    if not has_sword() or shutil.which("bible") is None and "KJV" not in sword_modules():
        pytest.skip("apt-get install diatheke sword-text-sparv bible-kjv")

    return parallel_verses("kjv")


@needs_sword
def test_real_translation_pair(verses):
    by_id = {ref: (en, es) for ref, en, es in verses}
    en, es = by_id["Genesis 1:1"]
    assert "beginning" in en and "principio" in es
    en, es = by_id["John 11:35"]
    assert en == "Jesus wept." and "Jesús" in es
    assert "1 Samuel 1:1" in by_id and "Revelation 22:21" in by_id
    assert len(verses) > 31000
    assert not any("<" in en or "<" in es for _, en, es in verses)


@needs_sword
def test_parallel_verses_come_from_the_cache(verses, monkeypatch):
    from genloom.data import bible

    def no_diatheke(*args):
        raise AssertionError("diatheke ran although the cache exists")

    monkeypatch.setattr(bible, "_diatheke", no_diatheke)
    monkeypatch.setattr(bible, "kjv", no_diatheke)
    assert bible.parallel_verses("kjv") == verses


@needs_sword
def test_translation_set_is_held_out_from_the_corpus(verses):
    from genloom.data.bible import chapter_of, parallel_chapters, split_chapters
    from genloom.data.evalsets import translation_eval_set
    from genloom.data.text import CORPORA, CORPUS_INFO

    train, held = split_chapters(verses)
    chapters = list(dict.fromkeys(chapter_of(ref) for ref, _, _ in verses))
    assert not set(train) & set(held) and sorted(train + held) == sorted(chapters) and len(chapters) == 1189
    assert len(held) == round(0.05 * len(chapters))
    pairs = translation_eval_set()
    assert {chapter_of(p["id"].split("/", 1)[1]) for p in pairs} == set(held)
    p = pairs[0]
    assert p["prompt"].startswith("EN: ") and p["prompt"].endswith("\nES:") and "\n" not in p["reference"]
    corpus = CORPORA["bible-en-es"]()
    assert len(corpus) == len(train) and "bible-en-es" in CORPUS_INFO
    assert corpus[0].startswith("EN: In the beginning God created the heaven and the earth.\nES: EN el principio")
    # the held-out side, laid out as the corpus lays out a chapter, is exactly the eval set's pairs
    held_lines = "\n".join(parallel_chapters("val")).split("\n")
    assert held_lines == [line for p in pairs for line in (p["prompt"] + " " + p["reference"]).split("\n")]


@needs_sword
def test_translation_set_is_deterministic(verses):
    from genloom.data.evalsets import translation_eval_set

    a = translation_eval_set()
    assert a == translation_eval_set()
    assert {p["id"] for p in translation_eval_set(seed=1)} != {p["id"] for p in a}
    sub = translation_eval_set(limit=50)
    assert len(sub) == 50 and sub == translation_eval_set(limit=50) and all(p in a for p in sub)
