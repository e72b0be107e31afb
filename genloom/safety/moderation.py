"""Text moderation, first version: an offensive-language classifier plus keyword lexicons, in OpenAI's shape.

Signals: `alt-profanity-check` (a linear SVM on TF-IDF features trained on ~200k human-labelled tweets and
Wikipedia comments; offline, milliseconds) scores abusive language, reported under "harassment"; word
lists catch explicit violence, self-harm and sexual terms. This is a coarse first line of defence, not a
safety classifier: it misses paraphrase and context, and it is English only. The safety issue deepens it.
A signal that cannot run is reported, never scored 0.0: its categories get a null score and category, each
result names them under "unavailable" with the reason, and the first attempt logs a warning.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

MODEL = "genloom-moderation-1"
THRESHOLD = 0.5
CATEGORIES = ("harassment", "harassment/threatening", "hate", "self-harm", "sexual", "violence")
LEXICON = {
    "violence": r"\b(kill|murder|stab|shoot|behead|massacre|bomb|torture|slaughter)(s|ed|ing)?\b",
    "harassment/threatening": r"\b(i('| wi)ll|gonna|going to) (kill|hurt|find|beat|stab|shoot) (you|u)\b",
    "self-harm": r"\b(kill myself|suicide|suicidal|self[- ]harm|cut myself|end my life)\b",
    "sexual": r"\b(porn|porno|nude|nudes|xxx|blowjob|rape[ds]?)\b",
    "hate": r"\b(subhuman|go back to your country|gas the)\b",
}
PATTERNS = {k: re.compile(v, re.IGNORECASE) for k, v in LEXICON.items()}


log = logging.getLogger("genloom.safety")
CLASSIFIED = ("harassment",)  # the categories the classifier scores (the lexicons score the rest)
INSTALL = "pip install alt-profanity-check"


@lru_cache(maxsize=1)
def _classifier():
    """(predict_prob, None) when alt-profanity-check loads, else (None, why); the failure is logged once."""
    try:
        from profanity_check import predict_prob
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken install (its pickled model, scikit-learn)
        why = (f"alt-profanity-check failed to import ({type(e).__name__}: {e}); {', '.join(CLASSIFIED)} "
               f"not scored: {INSTALL}")
        log.warning("moderation: %s", why)
        return None, why
    return predict_prob, None


def unavailable() -> dict[str, str]:
    """The categories this process cannot score, each with the reason (empty when every signal loaded)."""
    _, why = _classifier()
    return {c: why for c in CLASSIFIED} if why else {}


def moderate(texts: list[str]) -> list[dict]:
    """One OpenAI-style result per text: flagged, categories (bool) and category_scores (0..1).

    Categories the classifier would score are null (not 0.0) when it is unavailable, and each result then
    carries "unavailable": {category: reason}; flagged then rests on the categories that were scored.
    """
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
        cats = {c: None if s is None else s >= THRESHOLD for c, s in scores.items()}
        result = {"flagged": any(cats.values()), "categories": cats, "category_scores": scores}
        if missing:
            result["unavailable"] = dict(missing)
        out.append(result)
    return out


def protocol() -> str:
    _, why = _classifier()
    signal = "alt-profanity-check probability" if why is None else f"not scored ({why})"
    return (f"{MODEL}: harassment = {signal}; violence, threats, self-harm, sexual, hate = keyword lexicons "
            f"(score 0.9 on a match); flagged when any score >= {THRESHOLD}; English only")
