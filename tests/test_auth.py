"""The API key check on its own: only `Authorization: Bearer <the whole key>` passes, compared in constant time.

Each case here once passed every server test while broken: any scheme or a bare key accepted, and a
`startswith` comparison (a prefix or an extension of the key accepted) instead of hmac.compare_digest.
"""

from __future__ import annotations

import hmac

import pytest
from starlette.requests import Request

from genloom.serve.auth import Auth
from genloom.serve.database import Database
from genloom.serve.errors import ApiError

STATIC = "sk-static-0123456789abcdef"


def request(authorization: str | None = None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "method": "GET", "path": "/v1/models", "query_string": b"", "headers": headers})


def rejected(auth: Auth, authorization: str | None) -> ApiError:
    with pytest.raises(ApiError) as e:
        auth.check(request(authorization))
    assert e.value.status == 401 and e.value.code == "invalid_api_key", e.value.message
    return e.value


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A key store with one active key: (Auth over it, the key's secret)."""
    db = Database(data_dir=tmp_path_factory.mktemp("keys"))
    _, secret = db.create_key("tests")
    yield Auth(None, db), secret
    db.close()


@pytest.mark.parametrize("header", [f"Bearer {STATIC}", f"bearer {STATIC}", f"BEARER {STATIC}", f"Bearer  {STATIC} "])
def test_static_key_passes_as_a_bearer_token(header):
    # RFC 7235 section 2.1: the scheme name is case-insensitive, so "bearer" and "BEARER" are the same scheme
    Auth(STATIC).check(request(header))


@pytest.mark.parametrize("header", [
    None, "", STATIC, f" {STATIC}",  # no header; a bare key without a scheme
    f"Basic {STATIC}", f"Token {STATIC}", f"Key {STATIC}", f"ApiKey {STATIC}", f"Bearer:{STATIC}", f"Bearer{STATIC}",
    "Bearer", "Bearer ", f"{STATIC} Bearer",
])
def test_static_key_rejects_other_schemes_and_bare_keys(header):
    err = rejected(Auth(STATIC), header)
    assert "Bearer" in err.message or "Incorrect" in err.message


@pytest.mark.parametrize("given", [STATIC[:-1], STATIC[:3], STATIC + "0", STATIC + " extra", "x" + STATIC,
                                   STATIC.upper(), "sk-"])
def test_static_key_rejects_prefixes_and_extensions(given):
    rejected(Auth(STATIC), f"Bearer {given}")


def test_static_key_is_compared_with_hmac_compare_digest(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    Auth(STATIC).check(request(f"Bearer {STATIC}"))
    assert (STATIC.encode(), STATIC.encode()) in calls or (STATIC, STATIC) in calls, calls
    calls.clear()
    rejected(Auth(STATIC), f"Bearer {STATIC[:-1]}")
    assert calls, "the wrong key was rejected without hmac.compare_digest"


def test_stored_key_passes_only_as_the_whole_bearer_token(stored):
    auth, secret = stored
    req = request(f"Bearer {secret}")
    auth.check(req)
    assert req.state.key_id.startswith("key")
    auth.check(request(f"bearer {secret}"))
    for header in [secret, f"Basic {secret}", f"Token {secret}", f"Bearer{secret}",
                   f"Bearer {secret[:-1]}", f"Bearer {secret[:11]}", f"Bearer {secret}0", f"Bearer {secret} x"]:
        rejected(auth, header)


def test_stored_key_hashes_are_compared_with_hmac_compare_digest(stored, monkeypatch):
    auth, secret = stored
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    auth.check(request(f"Bearer {secret}"))
    assert calls, "a stored key was accepted without hmac.compare_digest"


def test_open_mode_needs_no_header():
    Auth(None).check(request())  # no static key, no key store: any request is served
    Auth(None).check(request("Basic whatever"))
