"""Per-key rate limits on a fake clock: a sliding 60-second window, and a Retry-After that is the real wait.

A window shrunk from 60 s to 5 s, and Retry-After fixed at 1, once passed every test: the server test sends
its requests within a second, so any window longer than that looks right.
"""

from __future__ import annotations

import pytest
from starlette.requests import Request

from genloom.serve import auth as auth_module
from genloom.serve.auth import Auth, RateLimiter
from genloom.serve.database import Database
from genloom.serve.errors import ApiError


class Clock:
    """Stands in for the time module inside genloom.serve.auth: monotonic() reads `now`."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(auth_module, "time", c)
    return c


def at(clock, t0, t):
    clock.now = t0 + t


def test_window_is_sixty_seconds(clock):
    rl, t0 = RateLimiter(), clock.now
    for t in (0, 10, 20):
        at(clock, t0, t)
        assert rl.allow("k", 3)
    for t in (21, 30, 45, 59.9, 60.0):  # the first request is still inside the window
        at(clock, t0, t)
        assert not rl.allow("k", 3), f"allowed {t} s after the first of 3 requests in a 3/minute window"
    at(clock, t0, 60.5)  # the request at 0 left the window: one slot
    assert rl.allow("k", 3)
    at(clock, t0, 60.6)
    assert not rl.allow("k", 3)  # requests at 10, 20 and 60.5 fill it again
    at(clock, t0, 70.5)
    assert rl.allow("k", 3)  # the one at 10 left


def test_refused_requests_do_not_use_up_the_window(clock):
    rl, t0 = RateLimiter(), clock.now
    assert rl.allow("k", 1)
    for t in range(1, 60, 7):
        at(clock, t0, t)
        assert not rl.allow("k", 1)
    at(clock, t0, 60.1)
    assert rl.allow("k", 1)


def test_keys_are_limited_separately(clock):
    rl = RateLimiter()
    assert rl.allow("a", 1) and not rl.allow("a", 1)
    assert rl.allow("b", 1)


@pytest.mark.parametrize("first_at, asked_at", [(0, 0.5), (0, 30), (0, 30.5), (0, 59.2), (12.25, 40)])
def test_retry_after_is_the_wait_until_a_slot_frees(clock, first_at, asked_at):
    rl, t0 = RateLimiter(), clock.now
    at(clock, t0, first_at)
    assert rl.allow("k", 2)
    at(clock, t0, first_at + 0.1)
    assert rl.allow("k", 2)
    at(clock, t0, asked_at)
    assert not rl.allow("k", 2)
    wait = rl.retry_after("k")
    assert isinstance(wait, int) and wait >= 1
    at(clock, t0, asked_at + wait)
    assert rl.allow("k", 2), f"still limited after the advertised Retry-After of {wait} s"
    if wait > 1:  # one second less would not have been enough: the header is not padded either
        rl2 = RateLimiter()
        at(clock, t0, first_at)
        rl2.allow("k", 2)
        at(clock, t0, first_at + 0.1)
        rl2.allow("k", 2)
        at(clock, t0, asked_at + wait - 1)
        assert not rl2.allow("k", 2), f"Retry-After {wait} s, but a slot was free after {wait - 1} s"


def test_retry_after_header_on_the_429(clock, tmp_path):
    db = Database(data_dir=tmp_path)
    try:
        _, secret = db.create_key("limited", rate_limit=2)
        auth, t0 = Auth(None, db), clock.now

        def call():
            auth.check(Request({"type": "http", "method": "GET", "path": "/v1/models", "query_string": b"",
                                "headers": [(b"authorization", f"Bearer {secret}".encode())]}))

        call()
        at(clock, t0, 5)
        call()
        at(clock, t0, 20)
        with pytest.raises(ApiError) as e:
            call()
        assert e.value.status == 429 and e.value.code == "rate_limit_exceeded"
        assert e.value.headers["Retry-After"] == "41"  # the request at 0 leaves the window at 60 (+1 s: 60 is still in)
        at(clock, t0, 61)
        call()
    finally:
        db.close()
