"""Music data: pieces from MIDI folders and the music21 corpus, the split by piece, transposition of the
training side only, the miditok tokenizer saved as JSON, and `genloom data` on music."""

import json
import subprocess
import sys

import numpy as np
import pytest
import symusic

from genloom.data import music
from genloom.data.split import split_indices
from genloom.data.text import TokenData, prepare
from genloom.data.tokenizers import MidiTokenizer, load_tokenizer
from genloom.errors import GenloomError


def make_score(pitches, tpq=480, drum=False, step=1):
    """A one-track score: one quarter note per pitch (step quarters apart), on the beat grid."""
    score = symusic.Score(tpq)
    track = symusic.Track("t", 0, drum)
    for i, p in enumerate(pitches):
        track.notes.append(symusic.Note(i * step * tpq, tpq, p, 90))
    score.tracks.append(track)
    return score


def midi_folder(tmp_path, n=6, extra=True):
    folder = tmp_path / "midi"
    (folder / "sub").mkdir(parents=True)
    for i in range(n):
        where = folder / "sub" if i % 2 else folder
        make_score([60 + i, 64 + i, 67 + i, 72 + i, 62, 65]).dump_midi(str(where / f"song{i}.mid"))
    if extra:
        symusic.Score(480).dump_midi(str(folder / "empty.mid"))
        make_score([36, 38, 42], drum=True).dump_midi(str(folder / "drums.mid"))
        (folder / "notes.txt").write_text("not music, ignored")
    return folder


def test_folder_pieces_sorted_and_empty_or_drum_only_left_out(tmp_path):
    pieces = music.load_pieces(str(midi_folder(tmp_path)))
    assert [p.name for p in pieces] == ["song0.mid", "song2.mid", "song4.mid", "sub/song1.mid", "sub/song3.mid",
                                        "sub/song5.mid"]
    assert all(len(p.score.tracks) == 1 and len(p.score.tracks[0].notes) == 6 for p in pieces)


def test_merge_tracks_drops_drums_and_keeps_every_pitched_note():
    score = make_score([60, 62])
    extra = symusic.Track("drums", 0, True)
    extra.notes.append(symusic.Note(0, 480, 36, 90))
    score.tracks.append(extra)
    score.tracks.append(make_score([48, 50, 52]).tracks[0])
    merged = music.merge_tracks(score)
    assert len(merged.tracks) == 1
    assert sorted(n.pitch for n in merged.tracks[0].notes) == [48, 50, 52, 60, 62]


@pytest.mark.parametrize("data, message", [
    (b"hello, not midi", "not a MIDI file"),
    (b"MThd\x00\x00\x00\x06\x00\x01\x00\x05", "not a readable MIDI file"),
])
def test_bad_midi_is_one_clear_error(data, message):
    with pytest.raises(GenloomError, match=message):
        music.read_midi(data, "primer.mid")


def test_empty_and_drum_only_midi_are_errors():
    with pytest.raises(GenloomError, match="has no notes"):
        music.read_midi(symusic.Score(480).dumps_midi())
    with pytest.raises(GenloomError, match="only drum notes"):
        music.read_midi(make_score([36, 38], drum=True).dumps_midi())


def test_a_file_in_a_folder_that_is_not_midi_is_named(tmp_path):
    folder = midi_folder(tmp_path, n=2, extra=False)
    (folder / "broken.mid").write_bytes(b"garbage")
    with pytest.raises(GenloomError, match="broken.mid is not a MIDI file"):
        music.load_pieces(str(folder))


def test_unknown_source_names_the_corpora(tmp_path):
    with pytest.raises(GenloomError, match="chorales, folk"):
        music.load_pieces("bogus-corpus")
    with pytest.raises(GenloomError, match="chorales, folk"):
        prepare("bogus-corpus", tmp_path / "out")


def test_split_is_by_piece_seeded_and_disjoint(tmp_path):
    pieces = music.load_pieces(str(midi_folder(tmp_path)))
    train, val = music.split_pieces(pieces, seed=7, val_fraction=0.34)
    t_idx, v_idx = split_indices(len(pieces), 0.34, 7)
    assert [p.name for p in train] == [pieces[i].name for i in t_idx]
    assert [p.name for p in val] == [pieces[i].name for i in v_idx]
    assert len(val) == 2 and not {p.name for p in train} & {p.name for p in val}
    again = music.split_pieces(music.load_pieces(str(tmp_path / "midi")), seed=7, val_fraction=0.34)
    assert [p.name for p in again[1]] == [p.name for p in val]


def test_transpositions_shift_every_note_and_stay_on_the_piano():
    low = music.Piece("low", make_score([22, 30]))
    out = music.transpositions([low], 3)
    assert [p.name for p in out] == ["low-1", "low", "low+1", "low+2", "low+3"]  # -2, -3 leave A0..C8
    plus2 = [p for p in out if p.name == "low+2"][0]
    assert [n.pitch for n in plus2.score.tracks[0].notes] == [24, 32]
    assert [n.pitch for n in low.score.tracks[0].notes] == [22, 30]  # the original untouched
    assert music.transpositions([low], 0)[0].score is low.score


@pytest.mark.parametrize("scheme", ["remi", "tsd"])
def test_tokenizer_json_round_trip_and_score_round_trip(tmp_path, scheme):
    tok = MidiTokenizer.create(scheme)
    tok.save(tmp_path / "tokenizer.json")
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    assert data["type"] == "midi" and data["miditok"]["tokenization"].lower() == scheme
    back = load_tokenizer(tmp_path)
    assert isinstance(back, MidiTokenizer) and back.names == tok.names and back.eot_id == tok.eot_id
    score = make_score([60, 64, 67, 72])
    ids = tok.encode_score(score)
    assert back.encode_score(score) == ids
    decoded = back.decode_score([tok.bos_id, *ids, tok.eot_id])
    assert [n.pitch for n in decoded.tracks[0].notes] == [60, 64, 67, 72]
    assert [n.time * 480 // decoded.ticks_per_quarter for n in decoded.tracks[0].notes] == [0, 480, 960, 1440]
    assert tok.encode(tok.decode(ids)) == ids  # the names round-trip too


def test_prepare_transposes_the_training_side_only(tmp_path):
    folder = midi_folder(tmp_path)
    meta = prepare(str(folder), tmp_path / "data", None, val_fraction=0.34, seed=7, transpose=2)
    assert meta["split"]["by"] == "piece" and meta["documents"] == {"train": 4, "val": 2, "train_augmented": 20}
    data = TokenData(tmp_path / "data")
    tok = data.tokenizer
    assert isinstance(tok, MidiTokenizer) and tok.scheme == "remi"
    train, val = data.split("train"), data.split("val")
    assert int((train == tok.bos_id).sum()) == 20 and int((val == tok.bos_id).sum()) == 2
    pieces = music.load_pieces(str(folder))
    _, val_pieces = music.split_pieces(pieces, 7, 0.34)
    expected = np.concatenate([music.piece_ids(tok, p) for p in val_pieces])
    assert np.array_equal(np.asarray(val), expected)  # validation: the pieces as they are, never shifted
    written = music.load_pieces(str(tmp_path / "data" / "pieces" / "val"))
    assert [[n.pitch for n in p.score.tracks[0].notes] for p in written] == \
        [[n.pitch for n in p.score.tracks[0].notes] for p in val_pieces]
    assert meta["pieces"]["val"] == [p.name for p in val_pieces]


def test_text_tokenizer_on_music_is_refused(tmp_path):
    with pytest.raises(GenloomError, match="is music: tokenise it with one of remi, tsd"):
        prepare(str(midi_folder(tmp_path)), tmp_path / "data", "bpe")


def test_chorales_from_the_music21_corpus(tmp_path):
    pieces = music.load_pieces("chorales:2")
    assert [p.name for p in pieces] == ["bach/bwv269", "bach/bwv347"]
    assert all(len(p.score.tracks) == 1 and len(p.score.tracks[0].notes) > 200 for p in pieces)
    with pytest.raises(GenloomError, match="at least 1"):
        music.load_pieces("chorales:0")


def test_genloom_data_cli_on_a_midi_folder(tmp_path):
    folder = midi_folder(tmp_path)
    res = subprocess.run([sys.executable, "-m", "genloom", "data", str(folder), "--out", str(tmp_path / "d"),
                          "-t", "tsd", "--val-fraction", "0.2"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "5+1 documents" in res.stdout and "midi (tsd, miditok) tokenizer" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "genloom", "data", str(folder / "notes.txt"), "--out",
                          str(tmp_path / "e"), "-t", "remi"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a music file" in bad.stderr
