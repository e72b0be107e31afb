"""Text-generation metrics: parity with sacrebleu and rouge-score, known values, input checks, embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from genloom.errors import GenloomError
from genloom.metrics.textgen import bleu, chrf, distinct_n, repetition_rate, rouge, self_bleu, semantic_similarity

HYPS = ["the cat sat on the mat today", "a quick brown fox jumps over the dog", "it is raining in the city"]
REFS = ["the cat was sitting on the mat", "the quick brown fox jumped over the lazy dog", "rain falls on the town"]
REFS2 = ["a cat sat on a mat", "a fast brown fox leaps over a lazy dog", "it rains in the city"]


def test_bleu_matches_sacrebleu_one_reference():
    res = bleu(HYPS, REFS)
    ref = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert res["bleu"] == pytest.approx(ref.score, abs=1e-9)
    assert 0 < res["bleu"] < 100
    assert "nrefs:1" in res["signature"] and f"version:{sacrebleu.__version__}" in res["signature"]
    assert res["signature"] in res["protocol"]


def test_bleu_matches_sacrebleu_several_references():
    res = bleu(HYPS, [[a, b] for a, b in zip(REFS, REFS2)])
    assert res["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS, REFS2]).score, abs=1e-9)
    assert "nrefs:2" in res["signature"]
    assert res["bleu"] > bleu(HYPS, REFS)["bleu"]  # a second reference can only add matches here
    var = bleu(HYPS, [[REFS[0], REFS2[0]], REFS[1], [REFS[2]]])
    assert var["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS, [REFS2[0], None, None]]).score)
    assert "nrefs:var" in var["signature"]


def test_identical_texts_give_bleu_100():
    assert bleu(REFS, REFS)["bleu"] == pytest.approx(100.0)
    assert chrf(REFS, REFS)["chrf"] == pytest.approx(100.0)


def test_chrf_matches_sacrebleu():
    res = chrf(HYPS, REFS)
    assert res["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-9)
    assert res["signature"].startswith("nrefs:1") and "chrF" in res["protocol"]
    plus = chrf(HYPS, REFS, word_order=2)
    assert plus["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score, abs=1e-9)


def test_rouge_matches_rouge_score():
    res = rouge(HYPS, REFS)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, h) for h, r in zip(HYPS, REFS)]
    for t in ("rouge1", "rouge2", "rougeL"):
        assert res[t]["f1"] == pytest.approx(np.mean([s[t].fmeasure for s in scores]), abs=1e-12)
        assert res[t]["precision"] == pytest.approx(np.mean([s[t].precision for s in scores]), abs=1e-12)
        assert res[t]["recall"] == pytest.approx(np.mean([s[t].recall for s in scores]), abs=1e-12)
    assert "stemmer on" in res["protocol"]
    assert rouge(REFS, REFS, types=("rougeL",))["rougeL"]["f1"] == pytest.approx(1.0)
    with pytest.raises(GenloomError, match="ROUGE type"):
        rouge(HYPS, REFS, types=("rougeX",))


def test_rouge_several_references_takes_best():
    res = rouge(HYPS[:1], [[REFS2[1], REFS[0]]], types=("rouge1",))
    best = rouge(HYPS[:1], [REFS[0]], types=("rouge1",))
    assert res["rouge1"]["f1"] == pytest.approx(best["rouge1"]["f1"])


def test_distinct_n_known_values_and_repetition_lowers_it():
    res = distinct_n(["a b a b"], n=(1, 2))
    assert res["distinct_1"] == pytest.approx(2 / 4)  # a, b of a b a b
    assert res["distinct_2"] == pytest.approx(2 / 3)  # (a b), (b a) of (a b), (b a), (a b)
    assert res["total_2grams"] == 3 and "whitespace" in res["protocol"]
    varied = distinct_n(HYPS)
    repeated = distinct_n([HYPS[0]] * 3)
    assert repeated["distinct_1"] < varied["distinct_1"] and repeated["distinct_2"] < varied["distinct_2"]
    assert distinct_n(["one"], n=2)["distinct_2"] == 0.0


def test_self_bleu_identical_100_and_diverse_lower():
    same = self_bleu(["the cat sat on the mat today"] * 4)
    assert same["self_bleu"] == pytest.approx(100.0)
    assert self_bleu(HYPS + REFS)["self_bleu"] < 30
    sampled = self_bleu([f"text number {i} about things" for i in range(30)], max_samples=10)
    assert sampled["texts"] == 10 and "10 texts" in sampled["protocol"]
    with pytest.raises(GenloomError, match="at least 2"):
        self_bleu(["only one"])


def test_repetition_rate_hand_made():
    # bigrams of "a b c a b c": ab bc ca ab bc -> 2 of 5 repeat an earlier one; "x y z" has none
    res = repetition_rate(["a b c a b c", "x y z", "short"], n=2)
    assert res["repetition_rate_2"] == pytest.approx((2 / 5 + 0) / 2)
    assert res["texts_scored"] == 2  # "short" has no bigram
    assert repetition_rate(["w " * 20], n=4)["repetition_rate_4"] == pytest.approx(16 / 17)
    assert repetition_rate(HYPS)["repetition_rate_4"] == 0.0


@pytest.mark.parametrize("fn", [bleu, chrf, rouge])
def test_mismatched_counts_name_both(fn):
    with pytest.raises(GenloomError) as e:
        fn(HYPS, REFS[:2])
    assert "3 hypotheses" in str(e.value) and "2 references" in str(e.value)


@pytest.mark.parametrize("hyps, refs, match", [
    ([], [], "no hypotheses"),
    (["a"], [], "no references"),
    (["a", 3], ["a", "b"], "hypotheses item 1 is int"),
    (["a"], [None], "reference 0"),
    (["a"], [[]], "reference 0"),
    (["a"], [["b", 2]], "reference 0"),
    ("a b", ["a b"], "not one string"),
])
def test_bad_inputs_are_one_line_errors(hyps, refs, match):
    with pytest.raises(GenloomError, match=match) as e:
        bleu(hyps, refs)
    assert "\n" not in str(e.value)


def test_non_string_texts_rejected_by_diversity_metrics():
    for fn in (distinct_n, self_bleu, repetition_rate):
        with pytest.raises(GenloomError, match="item 1 is NoneType"):
            fn(["a b", None])
        with pytest.raises(GenloomError, match="empty"):
            fn([])


@pytest.fixture(scope="module")
def embedder():
    from genloom.embeddings import load_embedder

    return load_embedder()


def test_embed_shape_and_norm(embedder):
    from genloom.embeddings import embed, load_embedder, model_dir

    assert (model_dir() / "modules.json").is_file()
    assert load_embedder() is embedder  # cached
    e = embed(["hello world", "a second sentence", "third"])
    assert e.shape == (3, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    raw = embed("hello world", normalize=False)
    assert raw.shape == (1, 384) and np.allclose(raw[0] / np.linalg.norm(raw[0]), e[0], atol=1e-5)
    assert embed([]).shape == (0, 384)
    with pytest.raises(GenloomError, match="text 1 is int"):
        embed(["ok", 5])


def test_semantic_similarity_known_orderings(embedder):
    same = semantic_similarity(REFS, REFS)
    assert same["similarity"] == pytest.approx(1.0, abs=1e-4)
    res = semantic_similarity(["The cat is sitting on the mat.", "The cat is sitting on the mat."],
                              ["A cat sits on a mat.", "Stock markets fell sharply on Monday."])
    para, unrelated = res["per_pair"]
    assert para > 0.7 and unrelated < 0.3 and para > unrelated
    assert res["similarity"] == pytest.approx((para + unrelated) / 2)
    assert "all-MiniLM-L6-v2" in res["protocol"] and "2 pairs" in res["protocol"]
    multi = semantic_similarity(["The cat is sitting on the mat."],
                                [["Stock markets fell sharply on Monday.", "A cat sits on a mat."]])
    assert multi["per_pair"][0] == pytest.approx(para, abs=1e-5)  # the best reference counts
    with pytest.raises(GenloomError, match="2 hypotheses but 1 references"):
        semantic_similarity(REFS[:2], REFS[:1])
