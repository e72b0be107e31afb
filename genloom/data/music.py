"""Symbolic music: pieces (the music21 corpus, MIDI/MusicXML/ABC files) -> split by piece -> miditok token files.

A prepared folder holds what a text folder holds (train.bin, val.bin, tokenizer.json, meta.json), the ids of each
piece framed BOS ... EOS, plus `pieces/train/*.mid` and `pieces/val/*.mid`: the split pieces as read (before any
augmentation), so evaluation reads the held-out pieces back in a second instead of re-parsing the corpus.
Every piece is merged to one non-drum track (the tokenizer models notes, not instrumentation); the training side
alone is transposed (`transpose` semitones either way, kept inside the piano's range).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import symusic

from genloom.data.split import SEED, VAL_FRACTION, split_indices
from genloom.data.tokenizers import MidiTokenizer, load_tokenizer
from genloom.errors import GenloomError, choices
from genloom.files import atomic_write_bytes, atomic_write_text

MIDI_SUFFIXES = {".mid", ".midi", ".smf"}
SCORE_SUFFIXES = {".xml", ".musicxml", ".mxl", ".abc", ".krn"}  # read through music21
SUFFIXES = MIDI_SUFFIXES | SCORE_SUFFIXES
TOKENIZERS = MidiTokenizer.SCHEMES
PIANO = range(21, 109)  # A0..C8: transposition keeps every note inside
TRANSPOSE = 3  # training pieces are also seen shifted by -3..+3 semitones


@dataclass
class Piece:
    """One piece of music: a name (corpus path or file name) and its score, merged to one track."""

    name: str
    score: symusic.Score


def merge_tracks(score: symusic.Score) -> symusic.Score:
    """The score's non-drum notes in one piano track, with its time signatures (tempos are a sampling option)."""
    out = symusic.Score(score.ticks_per_quarter)
    track = symusic.Track("piano", 0, False)
    for t in score.tracks:
        if not t.is_drum:
            track.notes.extend(t.notes)
    track.notes.sort(key=lambda n: (n.time, n.pitch, n.duration))
    out.tracks.append(track)
    seen = set()
    for ts in score.time_signatures:  # music21 writes one copy per part
        if (ts.time, ts.numerator, ts.denominator) not in seen:
            seen.add((ts.time, ts.numerator, ts.denominator))
            out.time_signatures.append(ts)
    out.tempos.extend(score.tempos[:1])
    return out


def note_count(score: symusic.Score) -> int:
    return sum(len(t.notes) for t in score.tracks if not t.is_drum)


def parse_midi(data: bytes | str | Path, name: str = "MIDI") -> symusic.Score:
    """MIDI bytes or a MIDI file -> a merged one-track score (perhaps empty); not MIDI is an error."""
    try:
        raw = data if isinstance(data, bytes) else Path(data).read_bytes()
    except OSError as e:
        raise GenloomError(f"cannot read {name}: {e.strerror}") from None
    if not raw.startswith(b"MThd"):
        raise GenloomError(f"{name} is not a MIDI file (no MThd header)")
    try:
        score = symusic.Score.from_midi(raw)
    except Exception as e:  # symusic raises RuntimeError/ValueError with the parser's message
        raise GenloomError(f"{name} is not a readable MIDI file ({str(e).splitlines()[0][:120]})") from None
    if not any(len(t.notes) for t in score.tracks):
        return merge_tracks(score)
    if not note_count(score):
        raise GenloomError(f"{name} has only drum notes; give a file with pitched notes")
    return merge_tracks(score)


def read_midi(data: bytes | str | Path, name: str = "MIDI") -> symusic.Score:
    """parse_midi, and a file with no pitched notes (empty, or drums only) is an error too."""
    score = parse_midi(data, name)
    if not note_count(score):
        raise GenloomError(f"{name} has no notes")
    return score


def _pitched_or_empty(path: Path) -> symusic.Score:
    """A folder's MIDI file: not MIDI is an error; drums only counts as empty (left out with the empty ones)."""
    try:
        return parse_midi(path, str(path))
    except GenloomError as e:
        if "only drum notes" in str(e):
            return symusic.Score(480)
        raise


def _music21_to_score(stream) -> symusic.Score:
    """A music21 stream as MIDI, repeats expanded; badly formed repeats (bwv277) are played once instead."""
    from music21 import bar, repeat  # music21 is slow to import: only when a score format is read
    from music21 import midi as m21midi

    try:
        return symusic.Score.from_midi(m21midi.translate.streamToMidiFile(stream).writestr())
    except repeat.ExpanderException:
        for r in [*stream.recurse().getElementsByClass(bar.Repeat),
                  *stream.recurse().getElementsByClass(repeat.RepeatExpression)]:
            if r.activeSite is not None:
                r.activeSite.remove(r)
        return symusic.Score.from_midi(m21midi.translate.streamToMidiFile(stream).writestr())


def _read_score_file(path: Path) -> list[tuple[str, symusic.Score]]:
    """A MusicXML/ABC/Humdrum file through music21 (an ABC file may hold many tunes): (name, score) pairs."""
    from music21 import converter, stream

    try:
        parsed = converter.parse(str(path), forceSource=True)  # forceSource: never read music21's pickle cache
    except Exception as e:
        raise GenloomError(f"{path} is not a readable score ({type(e).__name__}: {str(e)[:100]})") from None
    if isinstance(parsed, stream.Opus):
        return [(f"{path.name}#{i}", _music21_to_score(s)) for i, s in enumerate(parsed.scores)]
    return [(path.name, _music21_to_score(parsed))]


def chorales(limit: int | None = None) -> list[tuple[str, symusic.Score]]:
    """The 371 four-part Bach chorales music21 ships (Riemenschneider order), each parsed and written as MIDI."""
    from music21 import corpus

    names = list(corpus.chorales.Iterator(returnType="filename"))[:limit]
    return [(n, _music21_to_score(corpus.parse(n))) for n in names]


def folk(limit: int | None = None) -> list[tuple[str, symusic.Score]]:
    """The Essen folk song collection music21 ships as ABC (about 8,500 mostly German tunes, 35 files)."""
    from music21 import corpus

    out = []
    for path in sorted(p for p in corpus.getPaths() if "essenFolksong" in str(p)):
        for i, s in enumerate(corpus.parse(path).scores):
            out.append((f"essenFolksong/{path.stem}#{i}", _music21_to_score(s)))
            if limit and len(out) >= limit:
                return out
    return out


CORPORA = {"chorales": chorales, "folk": folk}
CORPUS_INFO = {  # where each named corpus comes from and its licence, for model cards
    "chorales": "371 four-part chorales by J. S. Bach (public-domain works), encodings from the music21 corpus "
                "(PyPI music21, BSD-3-Clause software; the corpus is shipped with the encoders' permission and some "
                "encodings restrict commercial use: music21/corpus/license.txt)",
    "folk": "Essen folk song collection (Schaffrath), ABC encodings in the music21 corpus (PyPI music21; see "
            "music21/corpus/license.txt, some encodings restrict commercial use)",
}


def _corpus_spec(source: str) -> tuple[str, int | None]:
    """'chorales' or 'chorales:20' (the first 20 pieces, for quick runs) -> (name, limit)."""
    m = re.fullmatch(r"([a-z]+)(?::(\d+))?", source)
    if m and m.group(1) in CORPORA:
        limit = int(m.group(2)) if m.group(2) else None
        if limit == 0:
            raise GenloomError(f"'{source}': a corpus limit must be at least 1")
        return m.group(1), limit
    return "", None


def is_music_source(source: str) -> bool:
    """A named music corpus, a music file, or a folder holding music files (and no text)."""
    if _corpus_spec(source)[0]:
        return True
    path = Path(source)
    if path.is_file():
        return path.suffix.lower() in SUFFIXES
    if path.is_dir():
        return any(p.suffix.lower() in SUFFIXES for p in path.rglob("*") if p.is_file())
    return False


def load_pieces(source: str) -> list[Piece]:
    """A corpus name (`chorales`, `folk`, optionally `:N` for the first N), a music file or a folder -> pieces.

    Files are read in sorted order; a folder's empty or drum-only files are left out (a file that is not music
    is an error naming it)."""
    name, limit = _corpus_spec(source)
    if name:
        pairs = CORPORA[name](limit)
    else:
        path = Path(source)
        if not path.exists():
            raise GenloomError(f"music source not found: '{source}'; give a MIDI/MusicXML/ABC file, a folder of "
                               f"them, or one of {choices(CORPORA)}")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        files = [p for p in files if p.suffix.lower() in SUFFIXES and not p.name.startswith(".")]
        if path.is_file() and not files:
            raise GenloomError(f"{path}: not a music file; give one of {choices(SUFFIXES)}")
        pairs = []
        for p in files:
            rel = str(p.relative_to(path)) if path.is_dir() else p.name
            if p.suffix.lower() in MIDI_SUFFIXES:
                pairs.append((rel, read_midi(p, str(p)) if path.is_file() else _pitched_or_empty(p)))
            else:
                pairs += [(f"{rel}{n[len(p.name):]}", s) for n, s in _read_score_file(p)]
    pieces = [Piece(n, merge_tracks(s)) for n, s in pairs]
    pieces = [p for p in pieces if note_count(p.score)]
    if not pieces:
        raise GenloomError(f"music source '{source}' has no pieces with pitched notes")
    return pieces


def split_pieces(pieces: list[Piece], seed: int = SEED, val_fraction: float = VAL_FRACTION
                 ) -> tuple[list[Piece], list[Piece]]:
    """Deterministic split BY PIECE: the pieces at split_indices' train and validation positions."""
    train, val = split_indices(len(pieces), val_fraction, seed)
    return [pieces[i] for i in train], [pieces[i] for i in val]


def transpositions(pieces: list[Piece], semitones: int = TRANSPOSE) -> list[Piece]:
    """Each piece at every shift in -semitones..+semitones (0 included) that keeps its notes on the piano."""
    out = []
    for p in pieces:
        pitches = [n.pitch for t in p.score.tracks for n in t.notes]
        lo, hi = min(pitches), max(pitches)
        for k in range(-semitones, semitones + 1):
            if lo + k in PIANO and hi + k in PIANO:
                out.append(Piece(p.name if k == 0 else f"{p.name}{k:+d}", p.score if k == 0 else p.score.shift_pitch(k)))
    return out


def piece_ids(tok: MidiTokenizer, piece: Piece | symusic.Score) -> list[int]:
    """A piece's token ids framed BOS ... EOS (the unit the token files are made of)."""
    score = piece.score if isinstance(piece, Piece) else piece
    return [tok.bos_id, *tok.encode_score(score), tok.eot_id]


def encode_pieces(tok: MidiTokenizer, pieces: list[Piece]) -> np.ndarray:
    ids = [i for p in pieces for i in piece_ids(tok, p)]
    return np.asarray(ids, dtype=np.uint16 if tok.vocab_size <= 65536 else np.uint32)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._#+-]+", "_", name).strip("_") + ".mid"


def write_pieces(folder: Path, pieces: list[Piece]) -> None:
    for i, p in enumerate(pieces):
        atomic_write_bytes(folder / f"{i:04d}-{_file_name(p.name)}", p.score.dumps_midi())


def tokenizer_for(source: str | Path, scheme: str = "remi") -> MidiTokenizer:
    """A prepared data or model folder's music tokenizer, or a fresh one of `scheme` (remi, tsd)."""
    if source:
        tok = load_tokenizer(source)
        if not isinstance(tok, MidiTokenizer):
            raise GenloomError(f"{source} holds a '{tok.kind}' tokenizer, not a music one")
        return tok
    return MidiTokenizer.create(scheme)


def prepare(source: str, out_dir: str | Path, tokenizer: str = "remi", val_fraction: float = VAL_FRACTION,
            seed: int = SEED, transpose: int = TRANSPOSE, tokenizer_from: str | None = None) -> dict:
    """`genloom data` for music: read, split by piece, transpose the training side, tokenise, write the folder."""
    if tokenizer not in TOKENIZERS:
        raise GenloomError(f"unknown music tokenizer '{tokenizer}'; choose one of {choices(TOKENIZERS)}")
    if transpose < 0 or transpose > 11:
        raise GenloomError(f"transpose must be 0..11 semitones, got {transpose}")
    pieces = load_pieces(source)
    train, val = split_pieces(pieces, seed, val_fraction)
    tok = tokenizer_for(tokenizer_from or "", tokenizer)
    augmented = transpositions(train, transpose)
    train_ids = encode_pieces(tok, augmented)
    val_ids = encode_pieces(tok, val) if val else np.zeros(0, dtype=train_ids.dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "train.bin", train_ids.tobytes())
    atomic_write_bytes(out / "val.bin", val_ids.tobytes())
    tok.save(out / "tokenizer.json")
    write_pieces(out / "pieces" / "train", train)
    write_pieces(out / "pieces" / "val", val)
    corpus = _corpus_spec(source)[0]
    meta = {
        "source": source,
        "modality": "music",
        "corpus": CORPUS_INFO.get(corpus, ""),
        "tokenizer": f"midi ({tok.scheme}, miditok)",
        "vocab_size": tok.vocab_size,
        "dtype": str(train_ids.dtype),
        "seed": seed,
        "val_fraction": val_fraction,
        "split": {"by": "piece", "units": {"train": len(train), "val": len(val)}},
        "transpose": transpose,
        "documents": {"train": len(train), "val": len(val), "train_augmented": len(augmented)},
        "tokens": {"train": int(train_ids.size), "val": int(val_ids.size)},
        "pieces": {"train": [p.name for p in train], "val": [p.name for p in val]},
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False))
    return meta
