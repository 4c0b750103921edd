"""Profile values from Redis are hostile until parsed: pipelines.profiles.parse_profile never raises and accepts
only three finite, bounded, float32-normal numbers."""

import math

from hypothesis import given
from hypothesis import strategies as st

from pipelines.profiles import MAX_TX_PER_DAY, parse_profile
from pipelines.serde import FLOAT32_MIN_NORMAL


def test_good_profile():
    assert parse_profile(b"10.5,2.0,3.25") == (10.5, 2.0, 3.25)
    assert parse_profile("0,0,0") == (0.0, 0.0, 0.0)


def test_bad_profiles():
    for raw in (b"", b"10", b"1,2", b"1,2,3,4", b"a,b,c", b"1,2,nan", b"inf,1,1", b"1,-inf,1", b"-1,1,1",
                b"1e300,1,1", b"1,1,1e7", b"1e-40,1,1", b"1,5e-324,1", b"\xff\xfe,1,1", b"1,,1", b" , , "):
        assert parse_profile(raw, max_amount=1e6) is None, raw


@given(st.binary(max_size=64))
def test_any_bytes_never_raise(raw):
    got = parse_profile(raw)
    if got is not None:
        assert len(got) == 3 and all(math.isfinite(v) and v >= 0 for v in got)


@given(st.tuples(*[st.floats(allow_nan=True, allow_infinity=True)] * 3))
def test_accepts_exactly_the_bounded_normal_values(values):
    got = parse_profile(",".join(repr(v) for v in values), max_amount=1e6)
    ok = all(0 <= v <= b and (v == 0 or v >= FLOAT32_MIN_NORMAL)
             for v, b in zip(values, (1e6, 1e6, MAX_TX_PER_DAY)))
    assert (got is not None) == ok
    if ok:
        assert got == tuple(values)
