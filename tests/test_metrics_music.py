"""Music metrics: every MusPy-style feature against muspy itself on the same notes, hand-computed pieces,
and the mgeval set comparison against scipy's KDE and closed-form Gaussian overlaps/KLs."""

import math

import muspy
import numpy as np
import pytest
import symusic
from scipy import stats

from genloom.metrics import music as mm


def make_score(tracks, tpq=12, time_sig=None):
    """tracks: list of (is_drum, [(time, duration, pitch), ...])."""
    sc = symusic.Score(tpq)
    if time_sig:
        sc.time_signatures.append(symusic.TimeSignature(0, *time_sig))
    for drum, notes in tracks:
        t = symusic.Track(program=0, is_drum=drum)
        for time, dur, pitch in notes:
            t.notes.append(symusic.Note(time, dur, pitch, 80))
        sc.tracks.append(t)
    return sc


def to_muspy(sc) -> muspy.Music:
    tracks = [muspy.Track(is_drum=t.is_drum, notes=[muspy.Note(n.time, n.pitch, n.duration, 80) for n in t.notes])
              for t in sc.tracks]
    return muspy.Music(resolution=sc.ticks_per_quarter, tracks=tracks)


def random_score(rng, tpq):
    tracks = []
    for k in range(rng.integers(1, 4)):
        n = int(rng.integers(1, 40))
        starts = np.sort(rng.integers(0, tpq * 40, n))
        notes = [(int(s), int(rng.integers(0, tpq * 3)), int(rng.integers(30, 90))) for s in starts]
        tracks.append((k == 2 and bool(rng.integers(0, 2)), notes))  # a third track is sometimes drums
    return make_score(tracks, tpq, time_sig=[(4, 4), (3, 4), (6, 8)][int(rng.integers(0, 3))])


MUSPY = {
    "pitch_range": muspy.pitch_range,
    "n_pitch_classes_used": muspy.n_pitch_classes_used,
    "pitch_class_entropy": muspy.pitch_class_entropy,
    "polyphony": muspy.polyphony,
    "scale_consistency": muspy.scale_consistency,
    "empty_beat_rate": muspy.empty_beat_rate,
}


@pytest.mark.parametrize("seed", range(12))
def test_features_match_muspy(seed):
    rng = np.random.default_rng(seed)
    sc = random_score(rng, tpq=int(rng.choice([4, 12, 24])))
    ref = to_muspy(sc)
    ours = mm.piece_features(sc)
    for name, fn in MUSPY.items():
        assert ours[name] == pytest.approx(fn(ref), abs=1e-12, nan_ok=True), name
    want = muspy.groove_consistency(ref, mm.measure_ticks(sc))
    assert ours["groove_consistency"] == pytest.approx(want, abs=1e-12, nan_ok=True)
    assert set(ours) == set(mm.FEATURES)


def test_hand_computed_piece():
    # tpq 4, 4/4: C4 and E4 together for a beat, then G4 for a beat, then a bar's rest, then C5 on beat 1
    sc = make_score([(False, [(0, 4, 60), (0, 4, 64), (4, 4, 67), (32, 4, 72)])], tpq=4, time_sig=(4, 4))
    f = mm.piece_features(sc)
    assert f["pitch_range"] == 12
    assert f["n_pitch_classes_used"] == 3  # C, E, G
    assert f["pitch_class_entropy"] == pytest.approx(-(0.5 * math.log2(0.5) + 2 * 0.25 * math.log2(0.25)))
    assert f["polyphony"] == pytest.approx((4 * 2 + 4 + 4) / 12)  # 12 sounding steps, 16 pitch-steps
    assert f["scale_consistency"] == 1.0
    # end 36 -> 10 beats; notes touch beats 0-1, 1-2, 8-9 (an offset on a beat boundary counts): 5 empty
    assert f["empty_beat_rate"] == pytest.approx(1 - 5 / 10)
    # bars of 16 ticks, 3 bars; onsets {0, 4} | {} | {0}: Hamming 2 then 1 over 2 * 16 positions
    assert f["groove_consistency"] == pytest.approx(1 - 3 / 32)


def test_drums_and_empty_pieces():
    drums_only = make_score([(True, [(0, 4, 36), (4, 4, 38)])], tpq=4)
    f = mm.piece_features(drums_only)
    assert f["pitch_range"] == 0 and f["n_pitch_classes_used"] == 0
    assert math.isnan(f["pitch_class_entropy"]) and math.isnan(f["polyphony"])
    assert f["empty_beat_rate"] == pytest.approx(1 - 3 / 3)  # drums count for empty beats, as in muspy
    empty = make_score([], tpq=4)
    assert math.isnan(mm.empty_beat_rate(empty)) and math.isnan(mm.groove_consistency(empty))


def test_kde_matches_scipy():
    x = np.random.default_rng(0).normal(size=300)
    grid = np.linspace(-4, 4, 101)
    np.testing.assert_allclose(mm.kde(x, grid, mm.scott_bandwidth(x)), stats.gaussian_kde(x)(grid), rtol=1e-10)


def test_overlap_and_kl_match_closed_forms():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, 4000)
    for d in (0.0, 1.0, 2.0):
        b = rng.normal(d, 1, 4000)
        r = mm.overlap_and_kl(a, b)
        assert r["overlap"] == pytest.approx(2 * stats.norm.cdf(-d / 2), abs=0.03)  # OA of N(0,1), N(d,1)
        if d < 2:  # beyond that KL is ruled by the KDE's thin tails, not by the Gaussians
            assert r["kl"] == pytest.approx(d * d / 2, abs=0.05)  # KL(N(0,1) || N(d,1))
    far = mm.overlap_and_kl(a, rng.normal(50, 1, 4000))
    assert far["overlap"] < 1e-6 and far["kl"] > 10


def test_overlap_degenerate_sets():
    assert mm.overlap_and_kl([2.0, 2.0, 2.0], [2.0, 2.0]) == {"overlap": 1.0, "kl": 0.0}
    r = mm.overlap_and_kl([0.0, 0.0, 0.0], [5.0, 5.0])  # two point masses apart: both take the pooled bandwidth
    h = np.std([0, 0, 0, 5, 5], ddof=1) * 5 ** -0.2
    assert r["overlap"] == pytest.approx(2 * stats.norm.cdf(-5 / (2 * h)), abs=0.01)
    assert r["kl"] == pytest.approx(25 / (2 * h * h), abs=0.05)


def test_set_distances():
    np.testing.assert_array_equal(mm.intra_set_distances([1, 4, 6]), [3, 5, 2])
    np.testing.assert_array_equal(mm.inter_set_distances([1, 2], [4, 6]), [3, 5, 2, 4])


def test_compare_sets_ranks_a_close_set_above_a_collapsed_one():
    rng = np.random.default_rng(2)
    ref = {"f": list(rng.normal(0, 1, 200)), "g": list(rng.uniform(0, 1, 200))}
    same = {"f": list(rng.normal(0, 1, 200)), "g": list(rng.uniform(0, 1, 200))}
    collapsed = {"f": [0.0] * 200, "g": [0.5] * 200}  # always the mean: the spread is wrong
    shifted = {"f": list(rng.normal(3, 1, 200)), "g": list(rng.uniform(2, 3, 200))}
    r_same, r_coll, r_shift = (mm.compare_sets(c, ref) for c in (same, collapsed, shifted))
    assert r_same["mean_overlap"] > 0.9
    assert r_coll["mean_overlap"] < r_same["mean_overlap"] - 0.15
    assert r_shift["mean_overlap"] < 0.3 and r_shift["mean_kl"] > r_same["mean_kl"]
    assert r_same["features"]["f"]["reference_n"] == 200 and "mgeval" in r_same["protocol"]


def test_compare_sets_leaves_out_undefined_values():
    ref = {"f": [1.0, 2.0, math.nan, 3.0]}
    r = mm.compare_sets({"f": [math.nan, 2.0]}, ref)
    assert r["features"]["f"]["reference_n"] == 3 and r["features"]["f"]["candidate_n"] == 1
    assert math.isfinite(r["features"]["f"]["overlap"])
    assert math.isnan(mm.compare_sets({"f": [math.nan]}, ref)["mean_overlap"])
