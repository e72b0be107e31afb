"""Text moderation, first version: an offensive-language classifier plus keyword lexicons, in OpenAI's shape.

Signals: `alt-profanity-check` (a linear SVM on TF-IDF features trained on ~200k human-labelled tweets and
Wikipedia comments; offline, milliseconds) scores abusive language, reported under "harassment"; word
lists catch explicit violence, self-harm and sexual terms. This is a coarse first line of defence, not a
safety classifier: it misses paraphrase and context, and it is English only. The safety issue deepens it.
"""

from __future__ import annotations

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


@lru_cache(maxsize=1)
def _profanity():
    try:
        from profanity_check import predict_prob
    except ImportError:
        return None
    return predict_prob


def moderate(texts: list[str]) -> list[dict]:
    """One OpenAI-style result per text: flagged, categories (bool) and category_scores (0..1)."""
    prob = _profanity()
    abusive = prob(list(texts)).tolist() if prob is not None and texts else [0.0] * len(texts)
    out = []
    for text, p in zip(texts, abusive):
        scores = {c: 0.0 for c in CATEGORIES}
        scores["harassment"] = float(p)
        for cat, pat in PATTERNS.items():
            if pat.search(text):
                scores[cat] = max(scores[cat], 0.9)
        cats = {c: s >= THRESHOLD for c, s in scores.items()}
        out.append({"flagged": any(cats.values()), "categories": cats, "category_scores": scores})
    return out


def protocol() -> str:
    signal = "alt-profanity-check probability" if _profanity() is not None else "no classifier installed"
    return (f"{MODEL}: harassment = {signal}; violence, threats, self-harm, sexual, hate = keyword lexicons "
            f"(score 0.9 on a match); flagged when any score >= {THRESHOLD}; English only")
