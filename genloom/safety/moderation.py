"""Moderation in OpenAI's omni-moderation shape, English and Chinese text and images.

genloom-moderation-2 (the default): a multi-label classifier genloom trains through its own loop (family
`textclf`, models/moderation: MiniLM and USE multilingual v3 sentence embeddings + hashed character n-grams +
curated-term counts matched with Aho-Corasick), one score per category, each compared with a threshold tuned on
the validation split of genloom's labelled set (models/moderation/thresholds.json). Images: NudeNet (ONNX,
offline) scores "sexual" from its exposed-body-part detections.

genloom-moderation-1 (the first version, kept for comparison): alt-profanity-check (harassment) plus English
keyword lexicons. A signal that cannot run is reported, never scored 0.0: its categories get a null score,
each result names them under "unavailable" with the reason, and the first attempt logs a warning.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

import genloom
from genloom.checkpoints import load_model
from genloom.data.moderation import CATEGORIES, LANGS, label_matrix, language, read_split, term_hits, term_matrix
from genloom.errors import GenloomError
from genloom.files import atomic_write_text
from genloom.objectives import moderation_features

MODEL = "genloom-moderation-2"
FIRST = "genloom-moderation-1"
MODELS = (MODEL, FIRST)
ALIASES = {"omni-moderation-latest": MODEL, "omni-moderation-2024-09-26": MODEL, "text-moderation-latest": MODEL,
           "text-moderation-stable": MODEL}
MAX_INPUTS = 32  # texts or parts per request
MAX_CHARS = 10_000  # per text: longer texts are an error, not silently cut (the classifier reads 256 tokens)
MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_CATEGORIES = ("sexual",)  # what the image detector scores
NSFW_PARTS = ("FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "BUTTOCKS_EXPOSED",
              "ANUS_EXPOSED")
DEFAULT_THRESHOLD = 0.5
MIN_SUPPORT = 20  # validation examples a category needs in a language to get a threshold of its own (tune)
WINDOW = 600  # characters: long texts are scored in overlapping windows, the maximum kept

log = logging.getLogger("genloom.safety")


def resolve(name: str) -> str:
    """The moderation model a request names (OpenAI's names map to the current one); unknown names are errors."""
    name = ALIASES.get(name, name)
    if name not in MODELS:
        raise GenloomError(f"unknown moderation model '{name}'; choose one of {', '.join(MODELS)} "
                           f"(or {', '.join(ALIASES)})")
    return name


def model_dir() -> Path:
    """The bundled classifier (models/moderation), or the folder GENLOOM_MODERATION_MODEL names."""
    env = os.environ.get("GENLOOM_MODERATION_MODEL")
    return Path(env) if env else Path(genloom.__file__).resolve().parents[1] / "models" / "moderation"


class TextModerator:
    """The trained classifier with its per-category thresholds."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise GenloomError(f"no moderation classifier in {folder}: train it with "
                               f"`bash scripts/train_starters.sh moderation`")
        loaded = load_model(folder)
        self.model = loaded.model.eval()
        self.labels = list(self.model.config.labels)
        path = folder / "thresholds.json"
        saved = json.loads(path.read_text()) if path.is_file() else {}
        tuned = saved.get("thresholds", {})
        self.term_weight = {lang: float(saved.get("term_weight", {}).get(lang, 0.0)) for lang in LANGS}
        self.thresholds = {lang: {c: float(tuned.get(lang, {}).get(c, DEFAULT_THRESHOLD)) for c in self.labels}
                           for lang in LANGS}  # per language: the classifier is calibrated differently in each
        self.folder = folder

    @torch.no_grad()
    def scores(self, texts: list[str]) -> np.ndarray:
        """(N, 13) probabilities; a text longer than WINDOW is scored per window, each category's maximum kept."""
        pieces, owner = [], []
        for i, t in enumerate(texts):
            for w in windows(t):
                pieces.append(w)
                owner.append(i)
        if not pieces:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        dense, ids = moderation_features(pieces, self.model.config.buckets, encoders=self.model.config.encoders)
        probs = self.fuse(torch.sigmoid(self.model((dense, ids))[0]).numpy(), pieces)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        np.maximum.at(out, np.array(owner), probs)
        return out


    def fuse(self, probs: np.ndarray, texts: list[str], weight: dict | None = None) -> np.ndarray:
        """Noisy-OR of the classifier and the curated term lists: 1 - (1 - p)(1 - w * hit), w per language
        (tuned on the validation split; 0 leaves the classifier alone)."""
        weight = self.term_weight if weight is None else weight
        w = np.array([weight[language(t)] for t in texts], dtype=np.float32)[:, None]
        hits = term_matrix(texts)[:, [CATEGORIES.index(c) for c in self.labels]]
        return 1.0 - (1.0 - probs) * (1.0 - w * hits)


def windows(text: str) -> list[str]:
    """The text, or overlapping WINDOW-character pieces of it (half a window apart)."""
    if len(text) <= WINDOW:
        return [text]
    step = WINDOW // 2
    return [text[i:i + WINDOW] for i in range(0, len(text) - step, step)]


@lru_cache(maxsize=4)
def text_moderator(folder: str | None = None) -> TextModerator:
    return TextModerator(folder or model_dir())


def check_texts(texts: list[str]) -> None:
    """Each text within MAX_CHARS (the API also caps a request at MAX_INPUTS inputs)."""
    for i, t in enumerate(texts):
        if len(t) > MAX_CHARS:
            raise GenloomError(f"input {i} is {len(t):,} characters; the limit is {MAX_CHARS:,} per input")


def _result(scores: dict, thresholds: dict, applied: dict) -> dict:
    """A flagged subcategory (self-harm/intent) flags its parent (self-harm) too: a subcategory narrows its parent, and
    every example of one in genloom's labelled set carries the parent's label as well."""
    cats = {c: None if scores[c] is None else bool(scores[c] >= thresholds.get(c, DEFAULT_THRESHOLD))
            for c in CATEGORIES}
    for c in CATEGORIES:
        parent = c.split("/")[0]
        if parent != c and cats[c] and cats.get(parent) is False:
            cats[parent] = True
    return {"flagged": any(bool(v) for v in cats.values()), "categories": cats,
            "category_scores": {c: None if s is None else round(float(s), 6) for c, s in scores.items()},
            "category_applied_input_types": applied}


def moderate(texts: list[str], model: str = MODEL, thresholds: dict | None = None,
             folder: str | None = None) -> list[dict]:
    """One OpenAI-style result per text: flagged, categories, category_scores, category_applied_input_types.

    `thresholds` overrides the tuned ones per category (a deployment's policy)."""
    texts = list(texts)
    check_texts(texts)
    if resolve(model) == FIRST:
        return moderate_first(texts)
    clf = text_moderator(folder)
    probs = clf.scores(texts)
    out = []
    for text, row in zip(texts, probs):
        th = {**clf.thresholds[language(text)], **(thresholds or {})}
        scores = {c: float(row[clf.labels.index(c)]) for c in CATEGORIES}
        out.append(_result(scores, th, {c: ["text"] for c in CATEGORIES}))
    return out


def tune(folder: str | Path, data: str | Path, max_fpr: float = 0.045) -> dict:
    """Per-language thresholds from the validation split alone, in two steps. (1) One threshold for every category of
    a language: the lowest whose flagged false-positive rate is at most `max_fpr` (the goal is 0.05, a little margin
    kept), with the term-list weight that gives the best validation recall. (2) Per category, that threshold or a
    lower one, the one with the best F1 of the category, as long as the language's flagged FPR stays <= max_fpr
    (a child such as self-harm/intent scores below its parent; lowering only, flagged recall never falls), not below
    half of it, and only for a category with MIN_SUPPORT validation examples in the language (fewer: an F1 on a
    dozen texts picks noise)
    Written to folder/thresholds.json; the test split is not read."""
    clf = TextModerator(folder)
    clf.term_weight = {lang: 0.0 for lang in LANGS}
    rows = read_split(data, "val")
    texts = [r["text"] for r in rows]
    raw = clf.scores(texts)
    y = label_matrix(rows)[:, [CATEGORIES.index(c) for c in clf.labels]].astype(bool)  # (N, labels)
    grid = [round(0.05 * k, 2) for k in range(1, 20)]
    thresholds, weights, figures = {}, {}, {}
    for lang in LANGS:
        keep = np.array([r["lang"] == lang for r in rows])
        harmful, benign = y[keep].any(axis=1), ~y[keep].any(axis=1)
        best = None
        for w in (0.0, 0.25, 0.5, 0.75, 0.9):
            probs = clf.fuse(raw, texts, {k: w for k in LANGS})[keep]
            for t in grid:
                flagged = probs.max(axis=1) >= t
                if _rate(flagged, benign) <= max_fpr:
                    if best is None or _rate(flagged, harmful) > best[0]:
                        best = (_rate(flagged, harmful), w, t, probs)
                    break
        if best is None:
            best = (0.0, 0.0, grid[-1], clf.fuse(raw, texts, {k: 0.0 for k in LANGS})[keep])
        _, w, t, probs = best
        th = np.full(len(clf.labels), t)
        for j in range(len(clf.labels)):
            if y[keep][:, j].sum() < MIN_SUPPORT:
                continue  # too few validation examples to pick a threshold of its own
            scored = []
            for tj in (g for g in grid if t / 2 <= g <= t):
                trial = th.copy()
                trial[j] = tj
                if _rate((probs >= trial).any(axis=1), benign) <= max_fpr:
                    scored.append((_f1(probs[:, j] >= tj, y[keep][:, j]), tj))
            th[j] = max(scored)[1] if scored else t  # best F1, ties to the higher threshold
        flagged = (probs >= th).any(axis=1)
        thresholds[lang] = {c: float(v) for c, v in zip(clf.labels, th)}
        weights[lang] = w
        figures[lang] = {"threshold": t, "term_weight": w, "val_fpr": round(_rate(flagged, benign), 4),
                         "val_recall": round(_rate(flagged, harmful), 4), "harmful": int(harmful.sum()),
                         "benign": int(benign.sum()),
                         "category_recall": {c: round(_rate(probs[:, j] >= th[j], y[keep][:, j]), 4)
                                             for j, c in enumerate(clf.labels) if y[keep][:, j].any()}}
    out = {"thresholds": thresholds, "term_weight": weights,
           "protocol": f"per language, the term-list weight (0, 0.25, 0.5, 0.75, 0.9) and the lowest threshold of "
                       f"0.05..0.95 whose flagged FPR on {Path(data) / 'val.jsonl'} is <= {max_fpr}, the pair with the "
                       f"best validation recall; then per category with >= {MIN_SUPPORT} validation examples that threshold "
                       f"or a lower one down to its half, the best validation F1 of the category with the flagged FPR "
                       f"still <= {max_fpr}; the test split is not read",
           "validation": figures}
    atomic_write_text(Path(folder) / "thresholds.json", json.dumps(out, indent=2, ensure_ascii=False))
    text_moderator.cache_clear()
    return out


def _rate(hit: np.ndarray, of: np.ndarray) -> float:
    """The share of the rows in `of` that `hit` (recall on harmful rows, FPR on benign ones); 0.0 when none."""
    return float((hit & of).sum() / max(1, of.sum()))


def _f1(pred: np.ndarray, true: np.ndarray) -> float:
    tp = float((pred & true).sum())
    return 2 * tp / max(1.0, float(pred.sum() + true.sum()))


# ---- images ----


def decode_image(data: bytes) -> np.ndarray:
    """The image's pixels as BGR uint8 (what NudeNet reads); not an image -> GenloomError."""
    if len(data) > MAX_IMAGE_BYTES:
        raise GenloomError(f"the image is {len(data):,} bytes; the limit is {MAX_IMAGE_BYTES:,}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError):
        raise GenloomError("the input is not an image (PNG, JPEG, WebP, GIF or BMP)") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


@lru_cache(maxsize=1)
def _nudenet():
    """(detector, None) when NudeNet loads, else (None, why); the failure is logged once."""
    try:
        from nudenet import NudeDetector
        return NudeDetector(), None
    except Exception as e:
        why = f"NudeNet failed to load ({type(e).__name__}: {e}); images not scored: pip install --no-deps nudenet"
        log.warning("moderation: %s", why)
        return None, why


def image_sexual_score(data: bytes) -> float | None:
    """The highest NudeNet confidence of an exposed-body-part detection (0.0: none), None when NudeNet is missing."""
    pixels = decode_image(data)
    det, _ = _nudenet()
    if det is None:
        return None
    found = det.detect(pixels)
    return max((float(d["score"]) for d in found if d["class"] in NSFW_PARTS), default=0.0)


def moderate_parts(texts: list[str], images: list[bytes], model: str = MODEL, thresholds: dict | None = None) -> dict:
    """One result for a multi-modal input (omni-moderation's shape): text and image scores, the maximum kept."""
    check_texts(texts)
    if len(texts) + len(images) > MAX_INPUTS:
        raise GenloomError(f"at most {MAX_INPUTS} parts per moderation request (got {len(texts) + len(images)})")
    text_res = moderate(["\n".join(texts)], model, thresholds) if texts else []
    scores = {c: 0.0 for c in CATEGORIES}
    applied = {c: [] for c in CATEGORIES}
    if text_res:
        for c in CATEGORIES:
            scores[c] = text_res[0]["category_scores"][c]
            applied[c].append("text")
    unavailable = dict(text_res[0].get("unavailable", {})) if text_res else {}
    for data in images:
        s = image_sexual_score(data)
        if s is None:
            unavailable["sexual"] = _nudenet()[1]
            continue
        scores["sexual"] = max(scores["sexual"] or 0.0, s)
        if "image" not in applied["sexual"]:
            applied["sexual"].append("image")
    lang = language("\n".join(texts)) if texts else "en"
    th = {**(text_moderator().thresholds[lang] if resolve(model) == MODEL else {}), **(thresholds or {})}
    th.setdefault("sexual", DEFAULT_THRESHOLD)
    res = _result(scores, th, applied)
    if unavailable:
        res["unavailable"] = unavailable
    return res


def protocol() -> str:
    clf = text_moderator()
    encoders = " + ".join(clf.model.config.encoders)
    return (f"{MODEL}: models/moderation (textclf: {encoders} embeddings + hashed char n-grams + curated terms), "
            f"thresholds tuned on the validation split ({clf.folder / 'thresholds.json'}); images: NudeNet exposed "
            f"parts -> sexual; inputs: at most {MAX_INPUTS}, {MAX_CHARS:,} characters each")


# ---- the first version (genloom-moderation-1), kept for comparison ----

FIRST_THRESHOLD = 0.5
LEXICON = {
    "violence": r"\b(kill|murder|stab|shoot|behead|massacre|bomb|torture|slaughter)(s|ed|ing)?\b",
    "harassment/threatening": r"\b(i('| wi)ll|gonna|going to) (kill|hurt|find|beat|stab|shoot) (you|u)\b",
    "self-harm": r"\b(kill myself|suicide|suicidal|self[- ]harm|cut myself|end my life)\b",
    "sexual": r"\b(porn|porno|nude|nudes|xxx|blowjob|rape[ds]?)\b",
    "hate": r"\b(subhuman|go back to your country|gas the)\b",
}
PATTERNS = {k: re.compile(v, re.IGNORECASE) for k, v in LEXICON.items()}
CLASSIFIED = ("harassment",)  # the categories alt-profanity-check scores (the lexicons score the rest)
INSTALL = "pip install alt-profanity-check"


@lru_cache(maxsize=1)
def _classifier():
    """(predict_prob, None) when alt-profanity-check loads, else (None, why); the failure is logged once."""
    try:
        from profanity_check import predict_prob
    except Exception as e:
        why = (f"alt-profanity-check failed to import ({type(e).__name__}: {e}); {', '.join(CLASSIFIED)} "
               f"not scored: {INSTALL}")
        log.warning("moderation: %s", why)
        return None, why
    return predict_prob, None


def unavailable() -> dict[str, str]:
    """The categories genloom-moderation-1 cannot score in this process, each with the reason."""
    _, why = _classifier()
    return {c: why for c in CLASSIFIED} if why else {}


def moderate_first(texts: list[str]) -> list[dict]:
    """genloom-moderation-1: alt-profanity-check for harassment, English regexes for the rest (13 categories
    reported; those it never scores stay 0.0); the classifier's categories are null when it is missing."""
    prob, _ = _classifier()
    missing = unavailable()
    abusive = prob(list(texts)).tolist() if prob is not None and texts else [None] * len(texts)
    out = []
    for text, p in zip(texts, abusive):
        scores = {c: 0.0 for c in CATEGORIES}
        scores["harassment"] = None if p is None else float(p)
        for cat, pat in PATTERNS.items():
            if pat.search(text):
                scores[cat] = max(scores[cat], 0.9)
        res = _result(scores, {c: FIRST_THRESHOLD for c in CATEGORIES}, {c: ["text"] for c in CATEGORIES})
        if missing:
            res["unavailable"] = dict(missing)
        out.append(res)
    return out


def explain(text: str) -> dict:
    """The curated terms a text matches, by category (for logs and debugging)."""
    return term_hits(text)
