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
