import json

import numpy as np
import pytest

from genloom.data.text import CORPORA, TokenData, prepare, read_documents, split_documents
from genloom.errors import GenloomError

from conftest import has_chatterbot, has_kjv, has_tang

FILES = ("train.bin", "val.bin", "tokenizer.json", "meta.json")


def decoded(folder, split):
    data = TokenData(folder)
    return data.tokenizer.decode(data.split(split).tolist())


def paragraphs(n, width=300):
    return [f"paragraph {i}: " + ("lorem ipsum dolor sit amet " * (width // 27)).strip() for i in range(n)]


def test_prepare_plain_text_file(tmp_path):
    paras = paragraphs(20)
    src = tmp_path / "book.txt"
    src.write_text("\n\n".join(paras), encoding="utf-8")
    meta = prepare(str(src), tmp_path / "out", "char", val_fraction=0.25, seed=3)
    for name in FILES:
        assert (tmp_path / "out" / name).is_file()
    assert json.loads((tmp_path / "out" / "meta.json").read_text()) == meta
    # one long file is cut into ~2000-character documents at paragraph breaks
    n_docs = meta["documents"]["train"] + meta["documents"]["val"]
    assert n_docs == 3 and meta["documents"]["val"] == 1
    data = TokenData(tmp_path / "out")
    assert data.split("train").dtype == np.uint16
    assert len(data.split("train")) == meta["tokens"]["train"] and len(data.split("val")) == meta["tokens"]["val"]
    train, val = decoded(tmp_path / "out", "train"), decoded(tmp_path / "out", "val")
    for p in paras:  # every paragraph lands in exactly one split, whole
        assert (p in train) != (p in val)
    assert meta["chars"]["train"] + meta["chars"]["val"] == sum(map(len, paras)) + 2 * (len(paras) - n_docs)


def test_one_short_file_is_split_by_paragraphs(tmp_path):
    # under 2,000 characters: one document, which used to leave 0 validation tokens without a word
    paras = paragraphs(8, width=120)
    src = tmp_path / "notes.txt"
    src.write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    meta = prepare(str(src), tmp_path / "a", "char", val_fraction=0.25, seed=5)
    assert meta["tokens"]["val"] > 0 and meta["tokens"]["train"] > 0
    assert meta["split"]["by"] == "paragraph" and meta["split"]["units"] == {"train": 6, "val": 2}
    assert meta["split"]["why"] == "1 document cannot give a 0.25 validation fraction: held out paragraphs instead"
    assert json.loads((tmp_path / "a" / "meta.json").read_text())["split"] == meta["split"]
    train, val = decoded(tmp_path / "a", "train"), decoded(tmp_path / "a", "val")
    for p in paras:  # every paragraph lands in exactly one split, whole
        assert (p in train) != (p in val)
    prepare(str(src), tmp_path / "b", "char", val_fraction=0.25, seed=5)
    for name in FILES:  # same seed, same bytes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    prepare(str(src), tmp_path / "c", "char", val_fraction=0.25, seed=6)
    assert (tmp_path / "a" / "val.bin").read_bytes() != (tmp_path / "c" / "val.bin").read_bytes()


def test_one_paragraph_file_is_split_by_lines_keeping_neighbours_together(tmp_path):
    lines = [f"line {i}: the quick brown fox" for i in range(20)]
    src = tmp_path / "lines.txt"
    src.write_text("\n".join(lines), encoding="utf-8")
    meta = prepare(str(src), tmp_path / "out", "char", val_fraction=0.1, seed=0)
    assert meta["split"]["by"] == "line" and meta["split"]["units"] == {"train": 18, "val": 2}
    assert meta["tokens"]["val"] > 0
    train, val = decoded(tmp_path / "out", "train"), decoded(tmp_path / "out", "val")
    for ln in lines:
        assert (ln in train) != (ln in val)
    # neighbouring lines of one side stay one block joined by a newline, as in the file
    pairs = [(a, b) for a, b in zip(lines, lines[1:]) if a in train and b in train]
    assert len(pairs) >= 15 and all(f"{a}\n{b}" in train for a, b in pairs)


def test_few_documents_are_split_by_paragraphs_not_half_by_half(tmp_path):
    # ~2,700 characters: two documents, so a document split held out one of them (~25%, or more) for a 5% ask
    paras = paragraphs(9)
    src = tmp_path / "notes.txt"
    src.write_text("\n\n".join(paras), encoding="utf-8")
    meta = prepare(str(src), tmp_path / "out", "char", val_fraction=0.05, seed=0)
    assert meta["split"]["by"] == "paragraph" and meta["split"]["units"] == {"train": 8, "val": 1}
    assert 0 < meta["tokens"]["val"] < meta["tokens"]["train"] / 4


def test_one_line_file_is_a_clear_error(tmp_path):
    src = tmp_path / "one.txt"
    src.write_text("just one line of text\n", encoding="utf-8")
    with pytest.raises(GenloomError, match=r"single line.*--val-fraction 0"):
        prepare(str(src), tmp_path / "out")
    meta = prepare(str(src), tmp_path / "out", val_fraction=0.0)  # asked for no validation: none, no error
    assert meta["tokens"]["val"] == 0 and meta["split"]["by"] == "document"


def test_several_documents_are_split_by_documents(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"row {i}\n\nsecond paragraph"}) for i in range(10)))
    meta = prepare(str(src), tmp_path / "out", "char", val_fraction=0.2, seed=0)
    assert meta["split"] == {"by": "document", "units": {"train": 8, "val": 2}}
    assert meta["documents"] == {"train": 8, "val": 2}


def test_prepare_folder(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("first document", encoding="utf-8")
    (src / "b.md").write_text("second document", encoding="utf-8")
    (src / "sub" / "c.txt").write_text("third document", encoding="utf-8")
    (src / ".hidden.txt").write_text("hidden document", encoding="utf-8")
    (src / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    meta = prepare(str(src), tmp_path / "out", "char", val_fraction=0.0)
    assert meta["documents"] == {"train": 3, "val": 0}
    assert meta["tokens"]["val"] == 0 and TokenData(tmp_path / "out").split("val").size == 0
    assert decoded(tmp_path / "out", "train") == "first document\n\nsecond document\n\nthird document\n\n"


def test_prepare_jsonl(tmp_path):
    rows = [{"text": f"row number {i}", "id": i} for i in range(10)]
    src = tmp_path / "rows.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    meta = prepare(str(src), tmp_path / "out", "char", val_fraction=0.2, seed=0)
    assert meta["documents"] == {"train": 8, "val": 2}
    both = decoded(tmp_path / "out", "train") + decoded(tmp_path / "out", "val")
    for r in rows:
        assert f"{r['text']}\n\n" in both
    alt = tmp_path / "alt.jsonl"
    alt.write_text(json.dumps({"body": "from another field"}) + "\n", encoding="utf-8")
    meta = prepare(str(alt), tmp_path / "alt", "char", val_fraction=0.0, text_field="body")
    assert decoded(tmp_path / "alt", "train") == "from another field\n\n"


def test_jsonl_bad_field_and_bad_line(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"content": "no text"}) + "\n")
    with pytest.raises(GenloomError) as e:
        prepare(str(src), tmp_path / "out")
    assert "rows.jsonl:2" in str(e.value) and "'text'" in str(e.value)
    with pytest.raises(GenloomError, match="no string field 'body'"):
        prepare(str(src), tmp_path / "out", text_field="body")
    src.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(GenloomError, match="rows.jsonl:2: not valid JSON"):
        prepare(str(src), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_prepare_tang(tang_dir):
    meta = json.loads((tang_dir / "meta.json").read_text(encoding="utf-8"))
    assert meta["documents"]["train"] + meta["documents"]["val"] == 313
    assert meta["tokenizer"] == "char" and meta["vocab_size"] > 2000
    text = decoded(tang_dir, "train") + decoded(tang_dir, "val")
    assert "床前明月光" in text
    assert "\x1b[" not in text  # ANSI colour codes of the fortune files are stripped


@pytest.mark.skipif(not has_kjv(), reason="the Debian packages bible-kjv / bible-kjv-text are not installed")
def test_prepare_kjv(tmp_path):
    docs = read_documents("kjv")
    assert len(docs) == 1189  # one document per chapter
    assert docs[0].startswith("Genesis 1\n1 In the beginning God created the heaven and the earth.")
    assert docs[-1].splitlines()[0] == "Revelation 22"
    meta = prepare("kjv", tmp_path / "kjv", "gpt2", val_fraction=0.01, seed=1)
    assert meta["documents"] == {"train": 1177, "val": 12}
    assert meta["tokens"]["train"] > 900_000 and meta["vocab_size"] == 50257
    data = TokenData(tmp_path / "kjv")
    assert int((data.split("val") == 50256).sum()) == 12  # documents joined by end-of-text


@pytest.mark.skipif(not has_chatterbot(), reason="chatterbot-corpus is not installed (pip install chatterbot-corpus)")
def test_prepare_chatterbot(tmp_path):
    meta = prepare("chatterbot", tmp_path / "cb", "bpe", vocab_size=400, val_fraction=0.05, seed=0)
    assert meta["documents"]["train"] + meta["documents"]["val"] > 1000
    assert meta["vocab_size"] == 400
    text = decoded(tmp_path / "cb", "train")
    assert text.startswith("User: ") and "\nBot: " in text


@pytest.mark.skipif(not has_tang(), reason="the Debian package fortunes-zh is not installed")
def test_split_is_deterministic(tmp_path):
    prepare("tang", tmp_path / "a", "char", seed=7)
    prepare("tang", tmp_path / "b", "char", seed=7)
    prepare("tang", tmp_path / "c", "char", seed=8)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "val.bin").read_bytes() != (tmp_path / "c" / "val.bin").read_bytes()
    assert (tmp_path / "a" / "train.bin").read_bytes() != (tmp_path / "c" / "train.bin").read_bytes()


def test_split_documents_partition():
    docs = [f"doc {i}" for i in range(50)]
    train, val = split_documents(docs, 0.2, seed=1)
    assert len(val) == 10 and len(train) == 40
    assert sorted(train + val) == sorted(docs)
    assert split_documents(docs, 0.2, seed=1) == (train, val)
    assert split_documents(docs, 0.2, seed=2)[1] != val
    assert split_documents(["a", "b"], 0.01, seed=0)[1] != []  # at least one validation document
    with pytest.raises(GenloomError, match="val fraction"):
        split_documents(docs, 1.0, seed=0)


@pytest.mark.parametrize("content", ["", "   \n\n\t  \n"])
def test_empty_corpus(tmp_path, content):
    src = tmp_path / "empty.txt"
    src.write_text(content)
    with pytest.raises(GenloomError, match="empty"):
        prepare(str(src), tmp_path / "out")


def test_empty_folder(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(GenloomError, match="empty"):
        prepare(str(tmp_path / "src"), tmp_path / "out")


def test_missing_path_lists_corpora(tmp_path):
    with pytest.raises(GenloomError) as e:
        prepare(str(tmp_path / "no-such-corpus"), tmp_path / "out")
    msg = str(e.value)
    assert "no-such-corpus" in msg
    for name in CORPORA:
        assert name in msg


def test_not_utf8(tmp_path):
    src = tmp_path / "latin1.txt"
    src.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(GenloomError, match="not UTF-8"):
        prepare(str(src), tmp_path / "out")


def test_tokenizer_from_reuses_vocabulary(tmp_path, english_dir):
    src = tmp_path / "more.txt"
    src.write_text("the cat likes the river.", encoding="utf-8")
    prepare(str(src), tmp_path / "out", tokenizer_from=str(english_dir), val_fraction=0.0)
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (english_dir / "tokenizer.json").read_bytes()
    src.write_text("QUITE DIFFERENT", encoding="utf-8")
    with pytest.raises(GenloomError, match="outside this char vocabulary"):
        prepare(str(src), tmp_path / "out2", tokenizer_from=str(english_dir), val_fraction=0.0)


def test_not_a_prepared_folder(tmp_path):
    with pytest.raises(GenloomError, match="genloom data"):
        TokenData(tmp_path)
