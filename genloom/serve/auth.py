"""Who may call the API: a static key, the database's active keys, or anyone (open mode); per-key rate limits.

Open mode: no static key and no active (unrevoked) key in the database, so any request is served.
Keys mode: a Bearer key is required on every route but /health. Revoking the last active key, or
`genloom keys open`, returns the server to open mode; creating a key leaves it.
"""

from __future__ import annotations

import collections
import hmac
import threading
import time

from fastapi import Request

from genloom.serve.errors import ApiError
from genloom.serve.logs import log_event


class Auth:
    """The server's key check, asking the database's count of active keys.

    "No active key" is never cached: open mode is re-checked on every request, so a key created by any
    process (`genloom keys create`) closes the server for the very next request. "Keys exist" is cached for
    `cache_s` seconds: a revocation of the last key reopens the server within that time (failing closed).
    """

    def __init__(self, api_key: str | None = None, db=None, cache_s: float = 2.0):
        self.api_key, self.db, self.cache_s = api_key, db, cache_s
        self.rate = RateLimiter()
        self._checked_at, self._active, self._mode = -1e9, 0, None
        self._lock = threading.Lock()

    def active_keys(self) -> int:
        """Active stored keys (asked each time while there are none, else every cache_s); a change of mode is logged."""
        now = time.monotonic()
        if self.db is not None and (now - self._checked_at > self.cache_s or not (self._active or self.api_key)):
            active = self.db.count_active_keys()
            with self._lock:
                if now >= self._checked_at:  # a slower, older answer does not overwrite a newer one
                    self._active, self._checked_at = active, now
        with self._lock:
            mode = "keys" if self.api_key or self._active else "open"
            if mode != self._mode:
                if self._mode is not None:
                    log_event("auth_mode_changed", mode=mode, detail=self._describe(mode))
                self._mode = mode
            return self._active

    def mode(self) -> str:
        """'open' (any request is served) or 'keys' (a Bearer key is required)."""
        self.active_keys()
        return self._mode

    def describe(self) -> str:
        return self._describe(self.mode())

    def _describe(self, mode: str) -> str:
        if mode == "open":
            return "open mode: no API keys, any request is served (`genloom keys create` to require keys)"
        needed = (["the static api_key"] if self.api_key else []) + \
                 ([f"{self._active} active stored key(s)"] if self._active else [])
        return f"keys mode: {' or '.join(needed)} required on every route but /health"

    def check(self, request: Request) -> None:
        """Bearer check, constant-time against the static key and the stored keys' hashes; then the rate limit."""
        if self.mode() == "open":
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if self.api_key and hmac.compare_digest(given.encode(), self.api_key.encode()):
            return
        record = self.db.verify_key(given) if self.db is not None and given else None
        if record is None:
            raise ApiError(401, "Incorrect API key provided." if given else "Missing API key: send "
                           "'Authorization: Bearer <key>' (see `genloom keys create`).", code="invalid_api_key")
        request.state.key_id = record.id
        if record.rate_limit and not self.rate.allow(record.id, record.rate_limit):
            raise ApiError(429, f"Rate limit of {record.rate_limit} requests per minute reached for this key.",
                           type="rate_limit_error", code="rate_limit_exceeded",
                           headers={"Retry-After": str(self.rate.retry_after(record.id))})


def check_api_key(request: Request) -> None:
    """The dependency every /v1 route declares: the app's Auth decides."""
    request.app.state.auth.check(request)


class RateLimiter:
    """A sliding one-minute window of request times per key."""

    def __init__(self):
        self.times: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.lock = threading.Lock()

    def allow(self, key_id: str, per_minute: int) -> bool:
        now = time.monotonic()
        with self.lock:
            q = self.times[key_id]
            while q and now - q[0] > 60:
                q.popleft()
            if len(q) >= per_minute:
                return False
            q.append(now)
            return True

    def retry_after(self, key_id: str) -> int:
        q = self.times.get(key_id)
        return max(1, int(61 - (time.monotonic() - q[0]))) if q else 1
