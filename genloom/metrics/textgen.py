"""Text-generation metrics: overlap (BLEU, chrF, ROUGE), diversity, repetition and embedding similarity.

Every function is pure and returns a dict holding its figures and a `protocol` line saying how they were
computed. Hypotheses are a list of strings; references are one string per hypothesis or a list of
strings per hypothesis (several references).
"""

from __future__ import annotations

import re

import numpy as np

from genloom.embeddings import MODEL_NAME, embed, load_embedder
from genloom.errors import GenloomError


def _check_texts(texts, what: str) -> list[str]:
    """A non-empty list of strings, or a one-line error naming the first bad item."""
    if isinstance(texts, str):
        raise GenloomError(f"{what} must be a list of strings, not one string")
    texts = list(texts)
    if not texts:
        raise GenloomError(f"no {what} given: the list is empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise GenloomError(f"{what} item {i} is {type(t).__name__}, not a string")
    return texts


def _check_pairs(hyps, refs) -> tuple[list[str], list[list[str]]]:
    """Hypotheses and references -> (hyps, refs per hypothesis as lists), counts and types checked."""
    hyps = _check_texts(hyps, "hypotheses")
    if isinstance(refs, str):
        raise GenloomError("references must be a list (one string or list of strings per hypothesis)")
    refs = list(refs)
    if not refs:
        raise GenloomError("no references given: the list is empty")
    if len(hyps) != len(refs):
        raise GenloomError(f"{len(hyps)} hypotheses but {len(refs)} references: give one reference (or list) each")
    out = []
    for i, r in enumerate(refs):
        r = [r] if isinstance(r, str) else r
        if not isinstance(r, (list, tuple)) or not r or not all(isinstance(x, str) for x in r):
            raise GenloomError(f"reference {i} must be a string or a non-empty list of strings, got {r!r:.60}")
        out.append(list(r))
    return hyps, out


def _streams(refs: list[list[str]]) -> list[list[str | None]]:
    """Per-hypothesis reference lists -> sacrebleu's reference streams, None where a hypothesis has fewer."""
    k = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(k)]


def bleu(hyps, refs, *, tokenize: str = "13a", lowercase: bool = False) -> dict:
    """Corpus BLEU (Papineni et al. 2002) computed by sacrebleu, with its signature."""
    from sacrebleu.metrics import BLEU

    hyps, refs = _check_pairs(hyps, refs)
    metric = BLEU(tokenize=tokenize, lowercase=lowercase)
    score = metric.corpus_score(hyps, _streams(refs))
    sig = str(metric.get_signature())
    return {
        "bleu": score.score,
        "precisions": list(score.precisions),
        "brevity_penalty": score.bp,
        "hyp_len": score.sys_len,
        "ref_len": score.ref_len,
        "signature": sig,
        "protocol": f"sacrebleu corpus BLEU over {len(hyps)} segments, signature {sig}",
    }


def chrf(hyps, refs, *, word_order: int = 0) -> dict:
    """Corpus chrF (Popovic 2015; chrF++ with word_order=2) computed by sacrebleu, with its signature."""
    from sacrebleu.metrics import CHRF

    hyps, refs = _check_pairs(hyps, refs)
    metric = CHRF(word_order=word_order)
    score = metric.corpus_score(hyps, _streams(refs))
    sig = str(metric.get_signature())
    return {
        "chrf": score.score,
        "signature": sig,
        "protocol": f"sacrebleu corpus {'chrF' if word_order == 0 else 'chrF++'} over {len(hyps)} segments, "
                    f"signature {sig}",
    }


def rouge(hyps, refs, types=("rouge1", "rouge2", "rougeL"), use_stemmer: bool = True) -> dict:
    """ROUGE-N/L (Lin 2004) by Google's rouge-score: mean precision, recall and F1 over the segments."""
    from rouge_score import rouge_scorer

    hyps, refs = _check_pairs(hyps, refs)
    types = (types,) if isinstance(types, str) else tuple(types)
    bad = [t for t in types if not re.fullmatch(r"rouge([1-9]|L|Lsum)", t)]
    if bad or not types:
        name = bad[0] if bad else "(none)"
        raise GenloomError(f"unknown ROUGE type {name!r}; use rouge1..rouge9, rougeL or rougeLsum")
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)
    sums = {t: np.zeros(3) for t in types}
    for h, r in zip(hyps, refs):
        scores = scorer.score(r[0], h) if len(r) == 1 else scorer.score_multi(r, h)
        for t in types:
            sums[t] += (scores[t].precision, scores[t].recall, scores[t].fmeasure)
    out = {t: dict(zip(("precision", "recall", "f1"), (sums[t] / len(hyps)).tolist())) for t in types}
    out["protocol"] = (f"rouge-score {', '.join(types)}, mean over {len(hyps)} segments, stemmer "
                       f"{'on' if use_stemmer else 'off'}, default tokenizer (lowercased [a-z0-9] tokens: "
                       "non-Latin scripts score 0); several references: the best F1 per segment and type")
    return out


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts, n=(1, 2)) -> dict:
    """Distinct-n (Li et al. 2016): unique n-grams / total n-grams pooled over the whole set."""
    texts = _check_texts(texts, "texts")
    orders = (n,) if isinstance(n, int) else tuple(n)
    out = {}
    for k in orders:
        grams = [g for t in texts for g in _ngrams(t.split(), k)]
        out[f"distinct_{k}"] = len(set(grams)) / len(grams) if grams else 0.0
        out[f"total_{k}grams"] = len(grams)
    out["protocol"] = (f"distinct-n for n in {list(orders)}: unique / total n-grams pooled over {len(texts)} texts, "
                       "whitespace tokens, case kept (0 when there are no n-grams)")
    return out


def self_bleu(texts, max_samples: int = 200, seed: int = 0) -> dict:
    """Self-BLEU (Zhu et al. 2018, Texygen): sentence BLEU of each text against all the others, averaged."""
    from sacrebleu.metrics import BLEU

    texts = _check_texts(texts, "texts")
    if len(texts) < 2:
        raise GenloomError(f"self-BLEU needs at least 2 texts, got {len(texts)}")
    if len(texts) > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), max_samples, replace=False))
        texts = [texts[i] for i in keep]
    metric = BLEU(effective_order=True)
    scores = [metric.sentence_score(t, texts[:i] + texts[i + 1 :]).score for i, t in enumerate(texts)]
    sig = str(metric.get_signature())
    return {
        "self_bleu": float(np.mean(scores)),
        "texts": len(texts),
        "signature": sig,
        "protocol": f"self-BLEU over {len(texts)} texts (seeded sample of at most {max_samples}, seed {seed}): "
                    f"sacrebleu sentence BLEU of each against the other {len(texts) - 1} as references, "
                    f"averaged; lower = more diverse; signature {sig}",
    }


def repetition_rate(texts, n: int = 4) -> dict:
    """seq-rep-n (Welleck et al. 2019): share of a text's n-grams that repeat an earlier one, averaged."""
    texts = _check_texts(texts, "texts")
    if n < 1:
        raise GenloomError(f"n must be at least 1, got {n}")
    rates = []
    for t in texts:
        grams = _ngrams(t.split(), n)
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    return {
        f"repetition_rate_{n}": float(np.mean(rates)) if rates else 0.0,
        "texts_scored": len(rates),
        "protocol": f"seq-rep-{n}: per text, (total - unique) / total {n}-grams of whitespace tokens, i.e. the "
                    f"share repeating an earlier {n}-gram of the same text, averaged over the {len(rates)} of "
                    f"{len(texts)} texts with at least {n} tokens",
    }


def semantic_similarity(hyps, refs, batch_size: int = 64) -> dict:
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings, per pair and averaged."""
    hyps, refs = _check_pairs(hyps, refs)
    flat = [x for r in refs for x in r]
    h = embed(hyps, normalize=True, batch_size=batch_size)  # (N, D)
    r = embed(flat, normalize=True, batch_size=batch_size)  # (sum of refs, D)
    owner = np.repeat(np.arange(len(refs)), [len(x) for x in refs])
    cos = np.einsum("nd,nd->n", h[owner], r)
    per_pair = np.full(len(hyps), -np.inf)
    np.maximum.at(per_pair, owner, cos)
    return {
        "similarity": float(per_pair.mean()),
        "per_pair": per_pair.tolist(),
        "protocol": f"mean cosine similarity of {MODEL_NAME} embeddings (mean pooled, unit length, inputs "
                    f"truncated to {load_embedder().max_seq_length} word pieces) over {len(hyps)} pairs; "
                    "several references: the best one",
    }
