"""Symbolic-music metrics: MusPy's per-piece features and Yang & Lerch's set-versus-set comparison.

Features (Dong et al., "MusPy", ISMIR 2020; muspy.metrics): each is a pure function of a symusic Score in
ticks, defined exactly as muspy defines it with the Score's ticks per quarter as muspy's `resolution`
(tests/test_metrics_music.py checks every one against muspy on the same notes). Drum tracks are ignored
where muspy ignores them.

Set comparison (Yang & Lerch, "On the evaluation of generative models in music", Neural Computing and
Applications 2020; their mgeval code): for each feature, the intra-set distances of the reference set
(|x_i - x_j| over its pairs) and the inter-set distances (|x_i - y_j| between candidate and reference pieces)
are smoothed with a Gaussian KDE; the overlapping area (OA) of the two densities and KL(intra || inter) say
how far the candidate set sits from the reference. We keep mgeval's distance-based protocol rather than
comparing the raw feature distributions because it is the published one (numbers comparable with papers
that use mgeval) and because it scores spread as well as location: a generator that always plays the
reference's mean value gets inter-set distances much smaller than the reference's own, and a low OA.
Two deliberate departures from mgeval's code, both stated in the protocol: both densities are evaluated on
one common grid (mgeval's kl_dist evaluates each on its own range, which makes its KL meaningless when the
ranges differ), and a set whose distances are all equal (zero variance, where scipy's KDE fails) gets the
bandwidth of the pooled distances.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

FEATURE_TPQ = 24  # muspy's default resolution: scores are resampled to it before features that count ticks
GRID_POINTS = 1024
KL_FLOOR = 1e-10  # density floor inside KL's logarithm: a finite KL when the candidate misses a region


# ---- per-piece features (muspy.metrics definitions) -----------------------------------------------
def _tracks(score, drums: bool = False):
    return [t for t in score.tracks if drums or not t.is_drum]


def _notes(score, drums: bool = False):
    """(time, end, pitch) int64 arrays of every note of the (non-drum) tracks."""
    cols = [t.notes.numpy() for t in _tracks(score, drums) if len(t.notes)]
    if not cols:
        z = np.zeros(0, np.int64)
        return z, z, z
    time = np.concatenate([c["time"] for c in cols]).astype(np.int64)
    dur = np.concatenate([c["duration"] for c in cols]).astype(np.int64)
    pitch = np.concatenate([c["pitch"] for c in cols]).astype(np.int64)
    return time, time + dur, pitch


def _length(score) -> int:
    """muspy's Music.get_end_time over the tracks: the last note offset of any track, drums included."""
    _, end, _ = _notes(score, drums=True)
    return int(end.max()) if len(end) else 0


def pitch_range(score) -> float:
    """Highest minus lowest pitch (0 without notes)."""
    _, _, p = _notes(score)
    return float(p.max() - p.min()) if len(p) else 0.0


def n_pitch_classes_used(score) -> float:
    """Number of distinct pitch classes (0-12)."""
    _, _, p = _notes(score)
    return float(len(np.unique(p % 12)))


def pitch_class_entropy(score) -> float:
    """Entropy (bits) of the normalised pitch-class histogram; NaN without notes."""
    _, _, p = _notes(score)
    if not len(p):
        return math.nan
    prob = np.bincount(p % 12, minlength=12) / len(p)
    prob = prob[prob > 0]
    return float(-(prob * np.log2(prob)).sum())


def _covered(intervals: np.ndarray) -> int:
    """Integer time steps covered by the union of [start, end) intervals."""
    if not len(intervals):
        return 0
    iv = intervals[np.argsort(intervals[:, 0], kind="stable")]
    total, cur_s, cur_e = 0, int(iv[0, 0]), int(iv[0, 1])
    for s, e in iv[1:]:
        if s > cur_e:
            total += max(0, cur_e - cur_s)
            cur_s, cur_e = int(s), int(e)
        else:
            cur_e = max(cur_e, int(e))
    return total + max(0, cur_e - cur_s)


def polyphony(score) -> float:
    """Mean number of pitches sounding over the time steps where at least one sounds (muspy's binary
    piano roll, computed from note intervals); NaN without notes."""
    t, e, p = _notes(score)
    iv = np.stack([t, e], 1)
    on = _covered(iv)
    if on < 1:
        return math.nan
    return float(sum(_covered(iv[p == k]) for k in np.unique(p)) / on)


SCALES = {"major": np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], bool),
          "minor": np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], bool)}


def scale_consistency(score) -> float:
    """In-scale rate: the largest fraction of notes inside one major or natural-minor scale over the 24 keys
    (muspy's scale_consistency, Mogren's C-RNN-GAN); NaN without notes."""
    _, _, p = _notes(score)
    if not len(p):
        return math.nan
    hist = np.bincount(p % 12, minlength=12)
    return float(max((hist * np.roll(mask, root)).sum() for mask in SCALES.values() for root in range(12)) / len(p))


def empty_beat_rate(score) -> float:
    """Fraction of beats (quarter notes) with no note sounding, counting a beat touched by a note's start or
    end tick; drum tracks count, as in muspy. NaN for a piece shorter than one tick."""
    length = _length(score)
    if length < 1:
        return math.nan
    res = score.ticks_per_quarter
    n_beats = length // res + 1
    t, e, _ = _notes(score, drums=True)
    busy = np.zeros(n_beats + 1, np.int64)  # difference array over beats start//res .. end//res inclusive
    np.add.at(busy, t // res, 1)
    np.add.at(busy, e // res + 1, -1)
    return float(1 - np.count_nonzero(np.cumsum(busy)[:n_beats]) / n_beats)


def measure_ticks(score) -> int:
    """Ticks per bar from the first time signature (4/4 when the file has none)."""
    ts = score.time_signatures
    num, den = (ts[0].numerator, ts[0].denominator) if len(ts) else (4, 4)
    return max(1, round(score.ticks_per_quarter * 4 * num / den))


def groove_consistency(score, measure_resolution: int | None = None) -> float:
    """1 - the mean Hamming distance between the onset patterns of consecutive bars, per bar position
    (Wu & Yang's Jazz Transformer measure, as muspy computes it; bars from the first time signature);
    NaN for a piece shorter than two bars."""
    res = measure_resolution or measure_ticks(score)
    n_measures = _length(score) // res + 1
    if n_measures < 2:
        return math.nan
    t, _, _ = _notes(score, drums=True)
    groove = np.zeros((n_measures, res), bool)
    groove[t // res, t % res] = True
    return float(1 - np.count_nonzero(groove[:-1] != groove[1:]) / (res * (n_measures - 1)))


FEATURES = {
    "pitch_range": pitch_range,
    "n_pitch_classes_used": n_pitch_classes_used,
    "pitch_class_entropy": pitch_class_entropy,
    "polyphony": polyphony,
    "scale_consistency": scale_consistency,
    "empty_beat_rate": empty_beat_rate,
    "groove_consistency": groove_consistency,
}


def piece_features(score) -> dict[str, float]:
    """Every feature of one piece (NaN where a feature is undefined for it)."""
    return {name: fn(score) for name, fn in FEATURES.items()}


def set_features(scores) -> dict[str, list[float]]:
    """Feature name -> the values over a set of pieces, in order."""
    rows = [piece_features(s) for s in scores]
    return {name: [r[name] for r in rows] for name in FEATURES}


# ---- set versus set (Yang & Lerch's mgeval protocol) ----------------------------------------------
def intra_set_distances(x) -> np.ndarray:
    """|x_i - x_j| over the pairs i < j of one set."""
    x = np.asarray(x, float)
    i, j = np.triu_indices(len(x), 1)
    return np.abs(x[i] - x[j])


def inter_set_distances(x, y) -> np.ndarray:
    """|x_i - y_j| over every pair of a candidate and a reference piece."""
    return np.abs(np.asarray(x, float)[:, None] - np.asarray(y, float)[None, :]).ravel()


def scott_bandwidth(x) -> float:
    """scipy.stats.gaussian_kde's default bandwidth in 1-D: std (ddof=1) * n ** (-1/5)."""
    x = np.asarray(x, float)
    return float(np.std(x, ddof=1) * len(x) ** (-0.2)) if len(x) > 1 else 0.0


def kde(x, grid, bandwidth: float) -> np.ndarray:
    """A Gaussian kernel density estimate of the samples x evaluated on grid."""
    x = np.asarray(x, float)
    z = (np.asarray(grid, float)[:, None] - x[None, :]) / bandwidth
    return np.exp(-0.5 * z * z).sum(1) / (len(x) * bandwidth * math.sqrt(2 * math.pi))


def overlap_and_kl(a, b, grid_points: int = GRID_POINTS) -> dict:
    """Overlapping area and KL(a || b) of the Gaussian KDEs of two samples, on one common grid that spans
    both samples and three bandwidths beyond. A zero-variance sample takes the pooled samples' bandwidth."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = scott_bandwidth(np.concatenate([a, b]))
    ha, hb = scott_bandwidth(a) or pooled, scott_bandwidth(b) or pooled
    if ha == 0 or hb == 0:  # every value of both samples is the same number: identical point masses
        return {"overlap": 1.0, "kl": 0.0}
    lo = min(a.min(), b.min()) - 3 * max(ha, hb)
    hi = max(a.max(), b.max()) + 3 * max(ha, hb)
    grid = np.linspace(lo, hi, grid_points)
    pa, pb = kde(a, grid, ha), kde(b, grid, hb)
    oa = float(np.trapezoid(np.minimum(pa, pb), grid))
    kl = float(stats.entropy(pa + KL_FLOOR, pb + KL_FLOOR))  # scipy normalises both to sum 1 on the grid
    return {"overlap": min(1.0, oa), "kl": kl}


def _finite(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v[np.isfinite(v)]


def compare_sets(candidate: dict[str, list[float]], reference: dict[str, list[float]], *,
                 candidate_name: str = "candidate", reference_name: str = "reference") -> dict:
    """Per feature: OA and KL between the reference's intra-set distances and the candidate-reference
    inter-set distances (mgeval), with each set's mean and std; then the mean OA and KL over the features.
    Pieces where a feature is undefined (NaN: no notes, shorter than two bars) are left out of that feature."""
    per, oas, kls = {}, [], []
    for name in reference:
        c, r = _finite(candidate.get(name, [])), _finite(reference[name])
        row = {"candidate_mean": float(c.mean()) if len(c) else math.nan,
               "candidate_std": float(c.std()) if len(c) else math.nan,
               "reference_mean": float(r.mean()) if len(r) else math.nan,
               "reference_std": float(r.std()) if len(r) else math.nan,
               "candidate_n": int(len(c)), "reference_n": int(len(r))}
        if len(r) >= 2 and len(c) >= 1:
            row.update(overlap_and_kl(intra_set_distances(r), inter_set_distances(c, r)))
            oas.append(row["overlap"])
            kls.append(row["kl"])
        else:
            row.update(overlap=math.nan, kl=math.nan)
        per[name] = row
    return {
        "features": per,
        "mean_overlap": float(np.mean(oas)) if oas else math.nan,
        "mean_kl": float(np.mean(kls)) if kls else math.nan,
        "protocol": (f"mgeval (Yang & Lerch 2020): per feature, the intra-set distances |x_i-x_j| of "
                     f"{reference_name} against the inter-set distances |x_i-y_j| between {candidate_name} and "
                     f"{reference_name}; Gaussian KDE (Scott's bandwidth, pooled when a set's variance is 0) "
                     f"on one common {GRID_POINTS}-point grid spanning both plus 3 bandwidths; OA = integral of "
                     f"min of the two densities (trapezoid); KL(intra || inter) with a {KL_FLOOR:g} density "
                     f"floor; features as muspy.metrics defines them, undefined values (NaN) left out"),
    }
