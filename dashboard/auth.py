"""Dashboard login (issue 24): the token buys a session cookie; the token itself never travels in a URL.

* The login page (``/login``) takes the token in a password field; its script sends it once, as an
  ``Authorization: Bearer`` header of a same-origin ``GET /login``, and the server answers with a random session id
  in a cookie (``HttpOnly; SameSite=Strict; Path=/``, ``Secure`` under TLS). The id maps, in this process only, to
  an expiry (``dashboard.session_ttl_s``); a restart logs everyone out.
* The WebSocket upgrade needs that cookie and a same-origin ``Origin`` (see ``server.py``). Scripts may send the
  token as an ``Authorization: Bearer`` header on the upgrade instead (browsers cannot set it on a WebSocket).
* Tokens are compared with ``hmac.compare_digest``. After ``FREE_FAILURES`` wrong tokens from one address, that
  address is locked out for 5 s, doubling per further failure up to ``MAX_LOCK_S`` (HTTP 429 with Retry-After).
"""

from __future__ import annotations

import hmac
import secrets
import time
from http.cookies import CookieError, SimpleCookie
from typing import Callable

COOKIE = "streamscore_session"
MIN_TOKEN_LEN = 16
# Tokens anyone would try first; the server refuses them (and any shorter than MIN_TOKEN_LEN) off loopback.
WELL_KNOWN = frozenset({"change-me", "changeme", "change_me", "token", "secret", "password", "admin",
                        "dashboard", "streamscore", "test", "test-token", "letmein", "123456", "default"})
FREE_FAILURES = 5
FIRST_LOCK_S = 5.0
MAX_LOCK_S = 300.0
MAX_SESSIONS = 10_000
MAX_TRACKED = 4096


def weakness(token: str) -> str | None:
    """Why this token must not guard a reachable dashboard, or None."""
    if not token:
        return "an empty token"
    if token == "change-me":
        return "the default token (change-me)"
    if token.lower() in WELL_KNOWN:
        return "a well-known token"
    if len(token) < MIN_TOKEN_LEN:
        return f"a short token (under {MIN_TOKEN_LEN} characters)"
    return None


def token_matches(given: str, token: str) -> bool:
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


def bearer(headers) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    auth = headers.get("Authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


def session_id(headers) -> str | None:
    """The session id from the request's Cookie header(s), or None."""
    for raw in headers.get_all("Cookie"):
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            continue
        if COOKIE in jar and jar[COOKIE].value:
            return jar[COOKIE].value
    return None


def set_cookie(sid: str, ttl_s: float, secure: bool) -> str:
    return (f"{COOKIE}={sid}; Max-Age={int(ttl_s)}; Path=/; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def clear_cookie(secure: bool) -> str:
    return f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


class Sessions:
    """Random session ids mapped to their expiry (monotonic seconds)."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic, limit: int = MAX_SESSIONS):
        self.ttl_s, self.clock, self.limit = ttl_s, clock, limit
        self._expiry: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._expiry)

    def new(self) -> str:
        now = self.clock()
        if len(self._expiry) >= self.limit:
            self._expiry = {s: t for s, t in self._expiry.items() if t > now}
            while len(self._expiry) >= self.limit:  # still full: the oldest login goes
                del self._expiry[next(iter(self._expiry))]
        sid = secrets.token_urlsafe(32)
        self._expiry[sid] = now + self.ttl_s
        return sid

    def valid(self, sid: str | None) -> bool:
        if not sid:
            return False
        expiry = self._expiry.get(sid)
        if expiry is None:
            return False
        if expiry <= self.clock():
            del self._expiry[sid]
            return False
        return True

    def drop(self, sid: str | None) -> None:
        if sid:
            self._expiry.pop(sid, None)


class Throttle:
    """Failed logins per remote address: free up to FREE_FAILURES, then an exponential lock-out."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._state: dict[str, tuple[int, float]] = {}  # address -> (failures, locked until)

    def locked_for(self, addr: str) -> float:
        """Seconds this address must still wait (0: it may try)."""
        _, until = self._state.get(addr, (0, 0.0))
        return max(0.0, until - self.clock())

    def failed(self, addr: str) -> None:
        if addr not in self._state and len(self._state) >= MAX_TRACKED:
            now = self.clock()  # forget the addresses that are not locked, then the oldest
            self._state = {a: v for a, v in self._state.items() if v[1] > now}
            while len(self._state) >= MAX_TRACKED:
                del self._state[next(iter(self._state))]
        n = self._state.get(addr, (0, 0.0))[0] + 1
        until = self.clock() + min(MAX_LOCK_S, FIRST_LOCK_S * 2 ** (n - FREE_FAILURES)) if n >= FREE_FAILURES else 0.0
        self._state[addr] = (n, until)

    def succeeded(self, addr: str) -> None:
        self._state.pop(addr, None)
