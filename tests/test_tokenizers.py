import json

import pytest

from genloom.data.tokenizers import (
    ByteBPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    load_tokenizer,
    tokenizer_from_json,
    train_tokenizer,
)
from genloom.errors import GenloomError

from conftest import english_text

POEM = "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。"
MIXED = POEM + "\nHello, world! naïve café 123"


def test_char_roundtrip_with_chinese():
    tok = train_tokenizer("char", [MIXED])
    ids = tok.encode(MIXED)
    assert len(ids) == len(MIXED)  # one id per code point, Chinese included
    assert tok.decode(ids) == MIXED
    assert tok.vocab_size == len(set(MIXED))
    assert tok.eot_id is None
    assert sorted(set(ids)) == list(range(tok.vocab_size))


def test_char_unknown_character():
    tok = CharTokenizer.train([POEM])
    with pytest.raises(GenloomError) as e:
        tok.encode("明月照雪")
    assert "雪" in str(e.value) and "照" in str(e.value)


def test_char_save_load(tmp_path):
    tok = CharTokenizer.train([MIXED])
    tok.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path)  # a folder finds its tokenizer.json
    assert isinstance(again, CharTokenizer)
    assert again.encode(MIXED) == tok.encode(MIXED)


@pytest.fixture(scope="module")
def bpe():
    texts = english_text(300).split("\n\n") + [POEM] * 3
    return train_tokenizer("bpe", texts, vocab_size=300)


def test_bpe_vocab_size_and_roundtrip(bpe):
    assert isinstance(bpe, ByteBPETokenizer)
    assert bpe.vocab_size == 300
    assert bpe.eot_id is not None and bpe.decode([bpe.eot_id]) == "<|endoftext|>"
    seen = "the old man follows a bright star."
    ids = bpe.encode(seen)
    assert bpe.decode(ids) == seen
    assert len(ids) < 0.75 * len(seen.encode("utf-8"))  # merges were learned
    unseen = "Zebras & 漢字 🙂 \t tabs\n\nnew  lines"  # byte level: any text round-trips
    assert bpe.decode(bpe.encode(unseen)) == unseen
    assert max(bpe.encode(unseen)) < bpe.vocab_size


def test_bpe_saved_as_json_reloads_with_identical_ids(bpe, tmp_path):
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == "bpe"
    again = load_tokenizer(path)
    assert isinstance(again, ByteBPETokenizer)
    assert again.vocab_size == bpe.vocab_size
    for text in [MIXED, english_text(12, seed=5), "a bright 月"]:
        assert again.encode(text) == bpe.encode(text)
    assert again.encode_batch(["the cat", POEM]) == [bpe.encode("the cat"), bpe.encode(POEM)]


def test_bpe_vocab_must_hold_the_bytes():
    with pytest.raises(GenloomError, match="at least 257"):
        train_tokenizer("bpe", ["abc"], vocab_size=100)


def test_gpt2_tokenizer():
    tok = train_tokenizer("gpt2", [])
    assert isinstance(tok, GPT2Tokenizer)
    assert tok.encode("hello world") == [31373, 995]
    assert tok.eot_id == 50256
    assert tok.vocab_size == 50257
    assert tok.decode(tok.encode(MIXED)) == MIXED
    assert tok.encode("<|endoftext|>") != [50256]  # special text in user data is not the special token
    assert tok.encode_batch(["hello world", "hello"]) == [[31373, 995], [31373]]


@pytest.mark.parametrize("kind", ["char", "bpe", "gpt2"])
def test_tokenizer_files_are_json_not_pickle(kind, tmp_path):
    tok = train_tokenizer(kind, [MIXED, "more text here"], vocab_size=300)
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    raw = path.read_bytes()
    assert raw[:1] == b"{" and not raw.startswith(b"\x80")  # JSON object, no pickle protocol header
    data = json.loads(raw.decode("utf-8"))
    assert data["type"] == kind
    again = tokenizer_from_json(data)
    assert type(again) is type(tok) and again.encode(MIXED) == tok.encode(MIXED)
    assert not [p for p in tmp_path.iterdir() if p.name != "tokenizer.json"]  # no temp files left


def test_unknown_tokenizer_and_bad_files(tmp_path):
    with pytest.raises(GenloomError, match="unknown tokenizer 'wordpiece'; choose one of bpe, char, gpt2"):
        train_tokenizer("wordpiece", ["x"])
    (tmp_path / "tokenizer.json").write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(GenloomError, match="not valid JSON"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"type": "sentencepiece"}')
    with pytest.raises(GenloomError, match="unknown tokenizer type"):
        load_tokenizer(tmp_path)
    with pytest.raises(GenloomError, match="not found"):
        load_tokenizer(tmp_path / "nope")
