"""Cancelling one request of a running batch leaves its neighbours' tokens exactly as they are alone.

Every other cancel test runs with max_batch=1, so a cancel that moved the last row into the hole without
moving its pending logits along (the neighbour then samples one token from the cancelled row's logits)
passed them all.
"""

from __future__ import annotations

import pytest

from genloom.sample import SamplingParams, generate
from genloom.serve.engine import Event, TextEngine

from test_engine import drive, model_tok, tokens  # noqa: F401  (model_tok: a fixture)

PROMPTS = ["abc", "helloWorld", "q", "mnopqrSTU", "xyzXab"]


def params(i: int) -> SamplingParams:
    """Greedy and seeded sampling, with and without penalties: each row has its own processors and generator."""
    return [SamplingParams(max_new_tokens=20, temperature=0.0),
            SamplingParams(max_new_tokens=22, temperature=1.0, top_k=20, seed=7),
            SamplingParams(max_new_tokens=18, temperature=0.0, repetition_penalty=1.5),
            SamplingParams(max_new_tokens=24, temperature=0.8, seed=3),
            SamplingParams(max_new_tokens=21, temperature=0.0)][i % 5]


@pytest.fixture(scope="module")
def solo(model_tok):  # noqa: F811
    model, tok = model_tok
    return [generate(model, tok, [p], params(i))[0] for i, p in enumerate(PROMPTS)]


@pytest.mark.parametrize("victims, after", [([0], 5), ([1], 3), ([2], 8), ([4], 4), ([0, 2], 6), ([1, 3], 1)])
def test_cancel_mid_batch_keeps_neighbours_token_for_token(model_tok, solo, victims, after):  # noqa: F811
    model, tok = model_tok
    engine = TextEngine(model, tok, max_batch=len(PROMPTS))
    hs = [engine.submit(p, params(i)) for i, p in enumerate(PROMPTS)]
    for _ in range(after):
        engine.step()
    assert engine.stats()["running"] == len(PROMPTS)  # all rows share the batch when the cancel comes
    for v in victims:
        assert not hs[v].finished
        hs[v].cancel()
    drive(engine, hs)
    for i, (h, c) in enumerate(zip(hs, solo)):
        got = tokens(h)
        if i in victims:
            assert h.result(timeout=1)[1] == "cancelled"
            assert got == c.token_ids[: len(got)] and len(got) < len(c.token_ids)
        else:
            assert got == c.token_ids, f"request {i} changed when {victims} was cancelled after {after} steps"
            assert h.result(timeout=1) == (c.text, c.finish_reason)
    assert engine.stats()["cancelled"] == len(victims)


def test_cancel_then_join_reuses_the_slot_without_disturbing_the_others(model_tok, solo):  # noqa: F811
    """A cancelled row's slot goes to a waiting request in the same step; everyone still matches solo."""
    model, tok = model_tok
    engine = TextEngine(model, tok, max_batch=3)
    hs = [engine.submit(p, params(i)) for i, p in enumerate(PROMPTS)]  # two wait for a slot
    for _ in range(4):
        engine.step()
    hs[0].cancel()
    drive(engine, hs)
    assert [e for e in hs[0].events(timeout=1)][-1] == Event("", None, "cancelled")
    for i in range(1, len(PROMPTS)):
        assert tokens(hs[i]) == solo[i].token_ids, i
