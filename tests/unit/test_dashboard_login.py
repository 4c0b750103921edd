"""dashboard/auth.py: weak tokens, sessions and the failed-login back-off, on a fake clock (issue 24)."""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers

from dashboard import auth


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("token,weak", [("", True), ("change-me", True), ("Password", True), ("short-but-ok", True),
                                        ("a-long-real-token", False)])
def test_weakness(token, weak):
    assert (auth.weakness(token) is not None) == weak


def test_token_matches_only_the_exact_non_empty_token():
    assert auth.token_matches("a-long-real-token", "a-long-real-token")
    assert not auth.token_matches("a-long-real-toke", "a-long-real-token")
    assert not auth.token_matches("", "")


def test_sessions_expire_and_drop():
    clock = Clock()
    s = auth.Sessions(60, clock=clock)
    a, b = s.new(), s.new()
    assert a != b and len(a) >= 40 and s.valid(a) and s.valid(b)
    assert not s.valid("forged") and not s.valid(None)
    s.drop(a)
    assert not s.valid(a) and s.valid(b)
    clock.t += 61
    assert not s.valid(b) and len(s) == 0


def test_sessions_are_bounded_oldest_first():
    s = auth.Sessions(60, clock=Clock(), limit=3)
    ids = [s.new() for _ in range(4)]
    assert len(s) == 3 and not s.valid(ids[0]) and all(s.valid(i) for i in ids[1:])


def test_throttle_locks_out_after_free_failures_and_doubles():
    clock = Clock()
    t = auth.Throttle(clock=clock)
    for _ in range(auth.FREE_FAILURES - 1):
        t.failed("10.0.0.1")
    assert t.locked_for("10.0.0.1") == 0
    t.failed("10.0.0.1")
    assert t.locked_for("10.0.0.1") == auth.FIRST_LOCK_S and t.locked_for("10.0.0.2") == 0
    clock.t += auth.FIRST_LOCK_S
    t.failed("10.0.0.1")
    assert t.locked_for("10.0.0.1") == 2 * auth.FIRST_LOCK_S
    for _ in range(20):
        t.failed("10.0.0.1")
    assert t.locked_for("10.0.0.1") == auth.MAX_LOCK_S
    t.succeeded("10.0.0.1")
    assert t.locked_for("10.0.0.1") == 0


def test_cookie_parsing_and_attributes():
    h = Headers([("Cookie", "other=1; streamscore_session=abc_DEF-123")])
    assert auth.session_id(h) == "abc_DEF-123"
    assert auth.session_id(Headers([("Cookie", "other=1")])) is None
    assert auth.bearer(Headers([("Authorization", "Bearer  tok ")])) == "tok"
    assert auth.bearer(Headers([("Authorization", "Basic x")])) is None
    c = auth.set_cookie("sid", 60, secure=True)
    assert c.startswith("streamscore_session=sid;") and "HttpOnly" in c and "SameSite=Strict" in c and "Secure" in c
    assert "Secure" not in auth.set_cookie("sid", 60, secure=False) and "Max-Age=0" in auth.clear_cookie(False)
