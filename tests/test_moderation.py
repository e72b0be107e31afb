"""Moderation says which categories it could not score: a classifier that fails to import is never a silent 0.0."""

from __future__ import annotations

import logging
import sys
import time

import pytest
from fastapi.testclient import TestClient
from test_api_text import CHAT

from genloom.safety import moderation
from genloom.serve.app import create_app

ABUSIVE = "you are a fucking idiot"


@pytest.fixture
def no_classifier(monkeypatch):
    """profanity_check fails to import (None in sys.modules makes `import` raise ImportError)."""
    monkeypatch.setitem(sys.modules, "profanity_check", None)
    moderation._classifier.cache_clear()
    yield
    moderation._classifier.cache_clear()


def test_classifier_scores_harassment_when_installed():
    pytest.importorskip("profanity_check")
    moderation._classifier.cache_clear()
    polite, abusive = moderation.moderate(["Have a lovely day!", ABUSIVE])
    assert abusive["category_scores"]["harassment"] > 0.5 and abusive["categories"]["harassment"] is True
    assert polite["category_scores"]["harassment"] < 0.5
    assert "unavailable" not in abusive and moderation.unavailable() == {}


def test_missing_classifier_is_reported_not_scored_zero(no_classifier, caplog):
    with caplog.at_level(logging.WARNING, logger="genloom.safety"):
        (res,) = moderation.moderate([ABUSIVE])
    assert res["category_scores"]["harassment"] is None  # not measured, not 0.0
    assert res["categories"]["harassment"] is None
    assert "harassment" in res["unavailable"] and "profanity" in res["unavailable"]["harassment"]
    assert any("harassment" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # the lexicons still work and still flag
    (threat,) = moderation.moderate(["I will kill you"])
    assert threat["flagged"] and threat["categories"]["violence"]
    assert "not installed" in moderation.protocol() or "failed" in moderation.protocol()


def test_api_says_harassment_unavailable_and_logs_at_startup(no_classifier, caplog):
    with caplog.at_level(logging.WARNING, logger="genloom.safety"):
        with TestClient(create_app([CHAT], max_batch=1, max_queue=1, jobs=False), base_url="http://127.0.0.1") as client:
            deadline = time.monotonic() + 10  # the start-up check runs in a thread, before any request
            while not (started := [r.getMessage() for r in caplog.records if r.name == "genloom.safety"]):
                assert time.monotonic() < deadline, "no start-up warning about the missing classifier"
                time.sleep(0.02)
            res = client.post("/v1/moderations", json={"input": [ABUSIVE, "hello"]})
    assert any("harassment" in m for m in started)
    assert res.status_code == 200
    for r in res.json()["results"]:
        assert r["category_scores"]["harassment"] is None
        assert "profanity" in r["unavailable"]["harassment"]
