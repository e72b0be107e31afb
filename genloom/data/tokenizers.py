"""Tokenizers: char-level, byte-level BPE (HF `tokenizers`), GPT-2 BPE (tiktoken). Saved as JSON, never pickled."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from genloom.errors import GenloomError, choices
from genloom.files import atomic_write_text

ASSETS = Path(__file__).parent / "assets"
EOT = "<|endoftext|>"


class Tokenizer:
    """The shared surface: encode/decode, vocab size, an optional end-of-text id, JSON round-trip."""

    kind: str = ""
    eot_id: int | None = None

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def to_json(self) -> dict:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False))


class CharTokenizer(Tokenizer):
    """One id per Unicode code point seen in the corpus (Chinese included)."""

    kind = "char"

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, texts: Iterable[str], **_) -> "CharTokenizer":
        seen = set()
        for t in texts:
            seen.update(t)
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            missing = sorted({c for c in text if c not in self.stoi})
            raise GenloomError(
                f"text has {len(missing)} character(s) outside this char vocabulary: {''.join(missing[:20])!r}"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_json(self) -> dict:
        return {"type": self.kind, "chars": self.chars}


class ByteBPETokenizer(Tokenizer):
    """Byte-level BPE trained with the `tokenizers` library (GPT-2 style pre-tokenization)."""

    kind = "bpe"

    def __init__(self, tok):
        self.tok = tok
        self.eot_id = tok.token_to_id(EOT)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096, **_) -> "ByteBPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise GenloomError(f"bpe vocab_size must be at least 257 (256 bytes + {EOT}), got {vocab_size}")
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def to_json(self) -> dict:
        return {"type": self.kind, "tokenizer": json.loads(self.tok.to_str())}


GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class GPT2Tokenizer(Tokenizer):
    """OpenAI's GPT-2 BPE through tiktoken, from the vendored `gpt2.tiktoken` (MIT, from openai-whisper)."""

    kind = "gpt2"
    eot_id = 50256

    def __init__(self):
        import tiktoken

        ranks = {}
        for line in (ASSETS / "gpt2.tiktoken").read_text().splitlines():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        self.enc = tiktoken.Encoding(
            name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256}
        )

    @classmethod
    def train(cls, texts=(), **_) -> "GPT2Tokenizer":
        return cls()

    @property
    def vocab_size(self) -> int:
        return self.enc.n_vocab

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(texts, num_threads=2)

    def decode(self, ids: Iterable[int]) -> str:
        return self.enc.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.enc.decode_bytes(list(ids))

    def to_json(self) -> dict:
        return {"type": self.kind, "vocab_file": "gpt2.tiktoken (vendored in genloom)"}


TOKENIZERS: dict[str, type[Tokenizer]] = {"char": CharTokenizer, "bpe": ByteBPETokenizer, "gpt2": GPT2Tokenizer}


class CodeTokenizer(Tokenizer):
    """Token ids: codes 0..K-1, then the classes, then the record start `<|image|>` (the end-of-text id)."""

    kind = "codes"

    def __init__(self, codebook_size: int, classes: list[str] | None = None):
        self.codebook_size, self.classes = int(codebook_size), list(classes or [])
        classes = [f"<class:{c.replace(' ', '_')}>" for c in self.classes]
        self.names = [f"c{i}" for i in range(self.codebook_size)] + classes + ["<|image|>"]
        self.ids = {name: i for i, name in enumerate(self.names)}
        self.eot_id = len(self.names) - 1

    @property
    def vocab_size(self) -> int:
        return len(self.names)

    def class_id(self, label: int) -> int:
        return self.codebook_size + int(label)

    def encode(self, text: str) -> list[int]:
        out = []
        for name in text.split():
            if name not in self.ids:
                raise GenloomError(f"unknown code token '{name}'; tokens are c0..c{self.codebook_size - 1}, "
                                   f"<class:NAME> and <|image|>")
            out.append(self.ids[name])
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.names[int(i)] for i in ids)

    def to_json(self) -> dict:
        return {"type": self.kind, "codebook_size": self.codebook_size, "classes": self.classes}


class MidiTokenizer(Tokenizer):
    """Symbolic music through miditok (REMI: Huang & Yang 2020; TSD) on symusic scores, one merged track.

    Token ids are miditok's; `encode`/`decode` read and write the token names separated by spaces (as the code
    tokenizer does), `encode_score`/`decode_score` go between scores and ids. Pieces are framed BOS ... EOS."""

    kind = "midi"
    SCHEMES = ("remi", "tsd")

    def __init__(self, tok):
        self.tok = tok
        self.scheme = type(tok).__name__.lower()
        self.bos_id, self.eot_id = tok.vocab["BOS_None"], tok.vocab["EOS_None"]
        self.pad_id = tok.vocab["PAD_None"]
        self.names = [tok[i] for i in range(len(tok))]

    @classmethod
    def create(cls, scheme: str = "remi") -> "MidiTokenizer":
        import miditok

        if scheme not in cls.SCHEMES:
            raise GenloomError(f"unknown music tokenizer '{scheme}'; choose one of {choices(cls.SCHEMES)}")
        config = miditok.TokenizerConfig(use_velocities=False, use_programs=False, use_tempos=False,
                                         use_time_signatures=True, special_tokens=["PAD", "BOS", "EOS"])
        return cls({"remi": miditok.REMI, "tsd": miditok.TSD}[scheme](config))

    @classmethod
    def from_dict(cls, params: dict) -> "MidiTokenizer":
        import miditok

        name = params.get("tokenization", "")
        if name.lower() not in cls.SCHEMES:
            raise GenloomError(f"unknown miditok tokenization {name!r}; choose one of {choices(cls.SCHEMES)}")
        fd, tmp = tempfile.mkstemp(suffix=".json")  # miditok reads its parameters from a file only
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(params, f)
            return cls(getattr(miditok, name)(params=tmp))
        finally:
            os.unlink(tmp)

    @property
    def vocab_size(self) -> int:
        return len(self.names)

    def encode(self, text: str) -> list[int]:
        vocab = self.tok.vocab
        unknown = [name for name in text.split() if name not in vocab]
        if unknown:
            raise GenloomError(f"unknown {self.scheme} token '{unknown[0]}' (tokens look like Bar_None, Pitch_60)")
        return [vocab[name] for name in text.split()]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.names[int(i)] for i in ids)

    def encode_score(self, score) -> list[int]:
        """A one-track score -> token ids, without BOS/EOS."""
        seqs = self.tok.encode(score)
        seq = seqs[0] if isinstance(seqs, list) else seqs
        return list(seq.ids)

    def decode_score(self, ids: Iterable[int]):
        """Token ids (special tokens dropped) -> a symusic score with one piano track."""
        special = {self.bos_id, self.eot_id, self.pad_id}
        return self.tok.decode([[int(i) for i in ids if int(i) not in special]])

    def to_json(self) -> dict:
        return {"type": self.kind, "miditok": self.tok.to_dict()}


def byte_alphabet() -> dict[int, str]:
    """GPT-2's bytes_to_unicode: each byte as a printable character (Radford et al. 2019, encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def bpe_split(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """BPE of `token` using only merges ranked below max_rank: for a vocabulary token, its last merge's two sides."""
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[1]):
                best = (i, r)
        if best is None:
            return parts
        i = best[0]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def bpe_tables(tok: "ByteBPETokenizer | GPT2Tokenizer") -> tuple[list[str], list[str], set[int]]:
    """A byte-level BPE as GPT-2's own files hold it: tokens by id spelled in the byte alphabet (vocab.json),
    merges in rank order as "left right" (merges.txt), and the ids of special tokens. For tiktoken's GPT-2 the
    merges are recovered from the ranks: each token's last merge is its BPE over the ranks below its own
    (the recovery llama.cpp's converter applies to tiktoken vocabularies)."""
    if isinstance(tok, ByteBPETokenizer):
        data = json.loads(tok.tok.to_str())
        tokens = [""] * tok.vocab_size
        for text, i in data["model"]["vocab"].items():
            tokens[i] = text
        special = set()
        for added in data.get("added_tokens", []):
            tokens[added["id"]] = added["content"]
            special.add(added["id"])
        merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
        return tokens, merges, special
    ranks = tok.enc._mergeable_ranks
    alpha = byte_alphabet()
    tokens, merges = [""] * tok.vocab_size, []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        tokens[rank] = "".join(alpha[b] for b in token)
        if len(token) > 1:
            left, right = bpe_split(ranks, token, rank)
            merges.append("".join(alpha[b] for b in left) + " " + "".join(alpha[b] for b in right))
    tokens[tok.eot_id] = EOT
    return tokens, merges, {tok.eot_id}


def train_tokenizer(kind: str, texts: list[str], vocab_size: int = 4096) -> Tokenizer:
    if kind not in TOKENIZERS:
        raise GenloomError(f"unknown tokenizer '{kind}'; choose one of {choices(TOKENIZERS)}")
    return TOKENIZERS[kind].train(texts, vocab_size=vocab_size)


def tokenizer_from_json(data: dict) -> Tokenizer:
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "char":
        return CharTokenizer(data["chars"])
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        return ByteBPETokenizer(HFTokenizer.from_str(json.dumps(data["tokenizer"])))
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "codes":
        return CodeTokenizer(data["codebook_size"], data.get("classes"))
    if kind == "midi":
        return MidiTokenizer.from_dict(data["miditok"])
    raise GenloomError(f"unknown tokenizer type {kind!r} in tokenizer.json; choose one of {choices(TOKENIZERS)}")


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise GenloomError(f"tokenizer not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GenloomError(f"tokenizer file is not valid JSON: {path}") from None
    return tokenizer_from_json(data)
