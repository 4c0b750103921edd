import io
import math

import fastavro
import pytest

from pipelines.serde import HEADER_LEN, MARKER, AvroSerde, DecodeError, check_transaction, load_schema_file, serde, SCHEMA_DIR

TX = {"transaction_id": 1, "customer_id": 2, "terminal_id": 3, "amount": 12.5, "event_time": 1_522_540_831_000,
      "produced_at": 1_700_000_000_000, "currency": "EUR"}


def test_round_trip_every_schema_loads():
    for path in SCHEMA_DIR.glob("*.avsc"):
        AvroSerde(path.stem)
    assert serde("transaction").decode(serde("transaction").encode(TX)) == TX


def test_single_object_header():
    raw = serde("transaction").encode(TX)
    assert raw[:2] == MARKER and len(raw) > HEADER_LEN


@pytest.mark.parametrize("raw,reason", [
    (b"", "not-avro"),
    (b"hello world, not avro", "not-avro"),
    (b'{"transaction_id": 1}', "not-avro"),
    (MARKER + b"\x00" * 8 + b"\x02", "unknown-schema"),
])
def test_invalid_records_raise_decode_error_with_raw_bytes(raw, reason):
    with pytest.raises(DecodeError) as ei:
        serde("transaction").decode(raw, topic="transactions", partition=3, offset=42)
    err = ei.value
    assert err.raw == raw
    assert err.reason == reason
    assert (err.topic, err.partition, err.offset) == ("transactions", 3, 42)


def test_truncated_and_trailing_bytes_are_corrupt():
    raw = serde("transaction").encode(TX)
    for bad in (raw[:-2], raw + b"\x00\x01"):
        with pytest.raises(DecodeError) as ei:
            serde("transaction").decode(bad)
        assert ei.value.reason == "corrupt-avro" and ei.value.raw == bad


def test_none_value():
    with pytest.raises(DecodeError) as ei:
        serde("transaction").decode(None)
    assert ei.value.reason == "null-value"


def test_schema_evolution_v1_writer_v2_reader():
    """A producer still on v1 (no `currency`) is read by the v2 reader, which fills the default."""
    v1 = AvroSerde("transaction", schema_path=SCHEMA_DIR / "history" / "transaction.v1.avsc")
    old = {k: v for k, v in TX.items() if k != "currency"}
    raw = v1.encode(old)
    assert raw[2:HEADER_LEN] != serde("transaction").fingerprint
    assert serde("transaction").decode(raw) == {**old, "currency": "EUR"}


def test_schemas_are_files_not_strings():
    schema = load_schema_file(SCHEMA_DIR / "transaction.avsc")
    assert schema["name"] == "Transaction"
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), TX)


@pytest.mark.parametrize("change,reason", [
    ({"amount": float("nan")}, "bad-amount"),
    ({"amount": math.inf}, "bad-amount"),
    ({"amount": -1.0}, "negative-amount"),
    ({"event_time": 0}, "bad-timestamp"),
    ({"event_time": 946_684_799_999}, "bad-timestamp"),  # before fraud.min_event_time_ms (2000-01-01)
    ({"event_time": 10**13 * 5}, "future-timestamp"),
])
def test_transaction_rules(change, reason):
    assert check_transaction({**TX, **change}, now_ms=1_700_000_000_000, max_future_ms=86_400_000)[0] == reason
    assert check_transaction(TX, now_ms=1_700_000_000_000, max_future_ms=86_400_000) is None


def test_batch_encoder_matches_fastavro_byte_for_byte():
    import numpy as np

    from pipelines.serde import BatchEncoder

    rng = np.random.default_rng(3)
    n = 257
    keys = [f"feat_{i}" for i in range(33)] + ["ünïcode_key"]
    cols = {
        "transaction_id": rng.integers(-2**62, 2**62, n), "customer_id": rng.integers(0, 10_000, n),
        "terminal_id": np.r_[0, -1, 63, 64, -64, -65, 2**63 - 1, -2**63, rng.integers(-10**6, 10**6, n - 8)],
        "amount": rng.normal(50, 40, n), "event_time": rng.integers(1_500_000_000_000, 1_800_000_000_000, n),
        "features": (keys, rng.normal(size=(n, len(keys)))), "profile_flags": rng.integers(0, 4, n),
        "score": rng.random(n), "decision": rng.integers(0, 3, n), "model_version": "fraud-abc123",
        "produced_at": rng.integers(0, 2**41, n), "scored_at": rng.integers(0, 2**41, n)}
    got = BatchEncoder("fraud_score").encode(cols, n)
    ref = serde("fraud_score")
    symbols = ["APPROVE", "REVIEW", "DECLINE"]
    for i in range(n):
        rec = {k: (v[i].item() if isinstance(v, np.ndarray) else v) for k, v in cols.items()
               if k not in ("features", "decision")}
        rec["features"] = dict(zip(keys, cols["features"][1][i].tolist()))
        rec["decision"] = symbols[cols["decision"][i]]
        assert got[i] == ref.encode(rec), i
        assert ref.decode(got[i])["features"] == rec["features"]


def test_batch_encoder_empty_batch_and_unsupported_schema():
    from pipelines.serde import BatchEncoder

    assert BatchEncoder("fraud_score").encode({}, 0) == []
    with pytest.raises(TypeError):
        BatchEncoder("dead_letter")


FRAUD_V1 = {"transaction_id": 1, "customer_id": 2, "terminal_id": 3, "amount": 12.5, "event_time": 1_522_540_831_000,
            "features": {"a": 1.0}, "profile_flags": 0, "score": 0.25, "decision": "REVIEW",
            "model_version": "fraud-1", "produced_at": 1_700_000_000_000, "scored_at": 1_700_000_000_005}


def test_schema_evolution_fraud_score_v1_writer_current_reader():
    """A FraudScore written before the shadow / A/B / rule fields existed decodes with their defaults."""
    v1 = AvroSerde("fraud_score", schema_path=SCHEMA_DIR / "history" / "fraud_score.v1.avsc")
    raw = v1.encode(FRAUD_V1)
    assert raw[2:HEADER_LEN] != serde("fraud_score").fingerprint
    assert serde("fraud_score").decode(raw) == {**FRAUD_V1, "shadow_version": None, "shadow_score": None,
                                                "ab_arm": None, "rule_set_version": 0, "rule": None}


def _fraud_columns(rng, n, **extra):
    import numpy as np

    keys = ["f0", "f1", "f2"]
    return {"transaction_id": rng.integers(0, 2**40, n), "customer_id": rng.integers(0, 1000, n),
            "terminal_id": rng.integers(0, 1000, n), "amount": rng.random(n) * 100,
            "event_time": rng.integers(1_500_000_000_000, 1_800_000_000_000, n),
            "features": (keys, rng.normal(size=(n, len(keys)))), "profile_flags": rng.integers(0, 4, n),
            "score": rng.random(n), "decision": rng.integers(0, 3, n), "model_version": "fraud-abc",
            "produced_at": rng.integers(0, 2**41, n), "scored_at": rng.integers(0, 2**41, n), **extra}


def _reference_records(cols, n):
    """The rows of `cols` as fastavro records (the BatchEncoder's column forms resolved per row)."""
    import numpy as np

    def at(v, i, union=False):
        if v is None:
            return None
        if isinstance(v, tuple) and union:
            null, values = v
            return None if null[i] else at(values, i)
        if isinstance(v, str):
            return v
        x = v[i]
        return x.item() if isinstance(x, np.generic) else x

    recs = []
    for i in range(n):
        r = {k: at(v, i, union=k in ("shadow_version", "shadow_score", "ab_arm", "rule"))
             for k, v in cols.items() if k != "features"}
        keys, vals = cols["features"]
        r["features"] = dict(zip(keys, vals[i].tolist()))
        r["decision"] = ["APPROVE", "REVIEW", "DECLINE"][r["decision"]]
        if r.get("ab_arm") is not None:
            r["ab_arm"] = ["CONTROL", "CANDIDATE"][r["ab_arm"]]
        recs.append(r)
    return recs


def test_batch_encoder_nullable_and_per_row_strings_match_fastavro():
    import numpy as np

    from pipelines.serde import BatchEncoder

    rng = np.random.default_rng(7)
    n = 300
    null = rng.random(n) < 0.4
    cols = _fraud_columns(
        rng, n, model_version=np.where(rng.random(n) < 0.3, "fraud-candidate-ü", "fraud-prod").astype(object),
        shadow_version=(null, np.full(n, "fraud-shadow", dtype=object)), shadow_score=(null, rng.random(n)),
        ab_arm=(null, rng.integers(0, 2, n)), rule_set_version=rng.integers(0, 2**33, n),
        rule=np.where(rng.random(n) < 0.2, "amount_over_limit", None))
    got = BatchEncoder("fraud_score").encode(cols, n)
    ref = serde("fraud_score")
    for i, rec in enumerate(_reference_records(cols, n)):
        assert got[i] == ref.encode(rec), i
        assert ref.decode(got[i]) == rec


def test_batch_encoder_union_forms_and_defaults():
    import numpy as np

    from pipelines.serde import BatchEncoder

    rng = np.random.default_rng(8)
    n = 5
    enc, ref = BatchEncoder("fraud_score"), serde("fraud_score")
    base = _fraud_columns(rng, n)
    # left out: every optional field takes its default; None: null everywhere; a bare array: never null
    for extra, want in [({}, {"shadow_version": None, "shadow_score": None, "ab_arm": None, "rule_set_version": 0,
                              "rule": None}),
                        ({"shadow_version": None, "shadow_score": None, "ab_arm": None, "rule": None,
                          "rule_set_version": np.zeros(n, np.int64)},
                         {"shadow_version": None, "shadow_score": None, "ab_arm": None, "rule_set_version": 0,
                          "rule": None}),
                        ({"shadow_version": "s1", "shadow_score": np.full(n, 0.5), "ab_arm": np.ones(n, np.int64),
                          "rule": np.full(n, "r", dtype=object)},
                         {"shadow_version": "s1", "shadow_score": 0.5, "ab_arm": "CANDIDATE", "rule": "r",
                          "rule_set_version": 0})]:
        got = enc.encode({**base, **extra}, n)
        for i, rec in enumerate(_reference_records(base, n)):
            assert ref.decode(got[i]) == {**rec, **want}
            assert got[i] == ref.encode({**rec, **want})


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.text(max_size=40), st.floats(allow_nan=False),
                          st.one_of(st.none(), st.text(max_size=10)),
                          st.text(max_size=30).map(lambda t: t + '\x00'[: len(t) % 2])),  # trailing NULs too
                min_size=1, max_size=20))
def test_batch_encoder_property_matches_fastavro(rows):
    import numpy as np

    from pipelines.serde import BatchEncoder

    n = len(rows)
    null = np.array([r[0] for r in rows])
    cols = _fraud_columns(np.random.default_rng(n), n,
                          shadow_version=(null, np.array([r[1] for r in rows], dtype=object)),
                          shadow_score=(null, np.array([r[2] for r in rows])),
                          rule=np.array([r[3] for r in rows] + [None], dtype=object)[:n],
                          model_version=np.array([r[4] for r in rows] + [None], dtype=object)[:n])
    got = BatchEncoder("fraud_score").encode(cols, n)
    ref = serde("fraud_score")
    for i, rec in enumerate(_reference_records(cols, n)):
        assert got[i] == ref.encode(rec)
