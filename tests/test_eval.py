import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genloom.data.text import TokenData
from genloom.errors import GenloomError
from genloom.metrics.text import perplexity

from conftest import random_gpt


@pytest.fixture(scope="module")
def val_ids(english_dir):
    return np.array(TokenData(english_dir).split("val"))


def test_natural_text_beats_shuffled_tokens(lm, val_ids):
    natural = perplexity(lm.model, val_ids)
    shuffled = perplexity(lm.model, np.random.default_rng(0).permutation(val_ids))
    assert natural["tokens_scored"] == shuffled["tokens_scored"] == len(val_ids) - 1
    assert natural["perplexity"] < 0.5 * shuffled["perplexity"]
    assert natural["perplexity"] < 25  # better than uniform over the 25-character vocabulary
    assert natural["bits_per_token"] == pytest.approx(math.log2(natural["perplexity"]))
    assert natural["nll_nats_per_token"] == pytest.approx(math.log(natural["perplexity"]))


def test_protocol_is_stated(lm, val_ids):
    default = perplexity(lm.model, val_ids[:200])
    assert "context 32" in default["protocol"] and "stride 16" in default["protocol"]
    res = perplexity(lm.model, val_ids[:200], context=20, stride=7)
    assert "context 20" in res["protocol"] and "stride 7" in res["protocol"]
    assert f"{res['tokens_scored']} tokens scored" in res["protocol"]


@pytest.mark.parametrize("context, stride", [(32, 16), (32, 32), (32, 1), (8, 3), (5, 5), (7, 6), (1, 1), (2, 1)])
@pytest.mark.parametrize("n", [2, 3, 10, 33, 100])
def test_every_token_scored_once(lm, val_ids, context, stride, n):
    res = perplexity(lm.model, val_ids[:n], context=context, stride=stride, batch_size=3)
    assert res["tokens_scored"] == n - 1
    assert math.isfinite(res["perplexity"]) and res["perplexity"] > 1


def per_token_nll(model, ids, context, stride):
    """The protocol spelled out token by token: which window scores token t, and with what history."""
    n = len(ids)
    nll, begin, prev_end = [], 0, 1
    while True:
        end = min(begin + context + 1, n)
        for t in range(prev_end, end):
            with torch.no_grad():
                logits, _ = model(torch.from_numpy(ids[begin:t].astype(np.int64))[None])
            nll.append(float(F.cross_entropy(logits[0, -1:], torch.tensor([int(ids[t])]))))
        prev_end = end
        if end == n:
            return nll
        begin += stride


@pytest.mark.parametrize("context, stride", [(32, 32), (12, 5), (4, 4)])
def test_matches_token_by_token_reference(context, stride):
    model = random_gpt(vocab_size=50, seed=4, boost=5.0)  # earlier tokens matter: windows show in the result
    ids = np.random.default_rng(1).integers(0, 50, 45)
    ref = per_token_nll(model, ids, context, stride)
    assert len(ref) == 44
    res = perplexity(model, ids, context=context, stride=stride)
    assert res["nll_nats_per_token"] == pytest.approx(sum(ref) / len(ref), rel=1e-5)


def test_single_window_equals_plain_cross_entropy(lm, val_ids):
    ids = val_ids[:30]
    with torch.no_grad():
        logits, _ = lm.model(torch.from_numpy(ids[:-1].astype(np.int64))[None])
    ce = F.cross_entropy(logits[0], torch.from_numpy(ids[1:].astype(np.int64)))
    assert perplexity(lm.model, ids)["nll_nats_per_token"] == pytest.approx(float(ce), rel=1e-5)


def test_bits_per_char_and_max_tokens(lm, val_ids):
    res = perplexity(lm.model, val_ids, tokenizer=lm.tokenizer, max_tokens=150)
    assert res["tokens_scored"] == 149
    assert res["chars_scored"] == 149 and res["tokenizer"] == "char"
    assert res["bits_per_char"] == pytest.approx(res["bits_per_token"])  # one char per token


@pytest.mark.parametrize("kw, n, match", [
    (dict(context=33), 50, "exceeds the model's block_size"),
    (dict(context=8, stride=9), 50, "stride must be"),
    (dict(context=8, stride=-1), 50, "stride must be"),
    (dict(), 1, "at least 2"),
])
def test_bad_eval_inputs(lm, val_ids, kw, n, match):
    with pytest.raises(GenloomError, match=match):
        perplexity(lm.model, val_ids[:n], **kw)
