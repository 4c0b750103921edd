"""The JVM decoders (udfs/java AvroDecoder) against the Python reference (udfs/routing.py BatchDecoder).

Both get the same records, good, written by an older schema and broken in every way we know, plus seeded random
corruptions, at the same reference time; every verdict and every field of a good record must agree."""

import io
import math
import random
import shutil
import subprocess
from pathlib import Path

import fastavro
import pytest

from pipelines.serde import MARKER, SCHEMA_DIR, _fingerprint, load_schema_file, serde
from tests.flink_util import udf_classpath
from udfs.routing import KINDS, BatchDecoder

pytestmark = pytest.mark.skipif(shutil.which("java") is None or shutil.which("javac") is None,
                                reason="needs a JDK (the jobs need one too)")

NOW = 1_795_000_000_000
MAX_FUTURE = 86_400_000
TX = {"transaction_id": 7, "customer_id": 2, "terminal_id": 3, "amount": 12.5, "event_time": 1_522_540_831_000,
      "produced_at": 1_700_000_000_000, "currency": "EUR"}
LABEL = {"transaction_id": 7, "customer_id": 2, "terminal_id": 3, "label": 1, "tx_time": 1_522_540_831_000,
         "label_time": 1_523_145_631_000, "produced_at": 1_700_000_000_000}


OVERLONG = "varint longer than 64 bits"


def java_decode(kind: str, records: list[bytes | None]) -> list[list[str]]:
    text = "".join(("-" if r is None else r.hex()) + "\n" for r in records)
    cmd = ["java", "-cp", udf_classpath(), "io.streamscore.udfs.AvroDecoder", kind, str(NOW), str(MAX_FUTURE)]
    out = subprocess.run(cmd, input=text, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines()]


def assert_agree(kind: str, records: list[bytes | None]) -> list[str]:
    import pandas as pd

    ref = BatchDecoder(kind, MAX_FUTURE)(pd.Series(records, dtype=object), now_ms=NOW)
    got = java_decode(kind, records)
    assert len(got) == len(records)
    fields = KINDS[kind].fields
    for i, (row, raw) in enumerate(zip(got, records)):
        want = ref.iloc[i]
        if row[1].endswith(OVERLONG) and want["reason"] != "corrupt-avro":
            continue  # fastavro reads an overlong varint as some number; the spec (and Java's Avro) refuse it
        assert (row[0] or None) == want["reason"], (i, raw.hex() if raw else raw, row, want["error"])
        for f, v in zip(fields, row[2:]):
            assert float(v) == float(want[f]) or math.isnan(float(v)) and math.isnan(float(want[f])), (i, f, v, want)
    return [r[0] for r in got]


def _writer(path: Path) -> tuple[bytes, dict]:
    parsed = fastavro.parse_schema(load_schema_file(path), _write_hint=False)
    return MARKER + _fingerprint(parsed), parsed


def _encode(path: Path, rec: dict) -> bytes:
    header, parsed = _writer(path)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, rec)
    return header + buf.getvalue()


def test_transactions_agree_with_the_reference():
    tx = serde("transaction")
    good = [tx.encode({**TX, "transaction_id": i, "amount": round(random.Random(i).uniform(0, 500), 2),
                       "customer_id": i * 7919, "event_time": TX["event_time"] + i * 1000}) for i in range(50)]
    v1 = _encode(SCHEMA_DIR / "history" / "transaction.v1.avsc",
                 {k: v for k, v in TX.items() if k != "currency"})
    broken = [
        None, b"", b"not avro at all", MARKER + b"\x00" * 8 + b"\x02",
        tx.encode({**TX, "amount": float("nan")}), tx.encode({**TX, "amount": float("inf")}),
        tx.encode({**TX, "amount": -0.01}), tx.encode({**TX, "event_time": 0}),
        tx.encode({**TX, "event_time": NOW + MAX_FUTURE + 1}), tx.encode({**TX, "event_time": NOW + MAX_FUTURE}),
        tx.encode({**TX, "customer_id": -1}), tx.encode({**TX, "terminal_id": -5}),
        tx.encode({**TX, "currency": "€uro"}),
        serde("transaction_label").encode(LABEL),  # another record's writer
        good[0] + b"\x00",  # trailing bytes
        good[0][:-5] + b"\x08\xff\xfe\xfd\xfc",  # a currency that is not UTF-8
    ]
    truncated = [good[1][:n] for n in range(len(good[1]))]
    reasons = assert_agree("transaction", good + [v1] + broken + truncated)
    assert reasons[:51] == [""] * 51
    assert {"null-value", "not-avro", "unknown-schema", "bad-amount", "negative-amount", "bad-timestamp",
            "future-timestamp", "bad-id", "corrupt-avro"} <= set(reasons)


def test_labels_agree_with_the_reference():
    lb = serde("transaction_label")
    good = [lb.encode({**LABEL, "transaction_id": i, "label": i % 2}) for i in range(20)]
    broken = [lb.encode({**LABEL, "label": 2}), lb.encode({**LABEL, "label": -1}),
              lb.encode({**LABEL, "label_time": 0}), lb.encode({**LABEL, "label_time": NOW + MAX_FUTURE + 1}),
              serde("transaction").encode(TX), good[0] + b"\x01"]
    truncated = [good[3][:n] for n in range(len(good[3]))]
    reasons = assert_agree("transaction_label", good + broken + truncated)
    assert reasons[:20] == [""] * 20
    assert {"bad-label", "bad-timestamp", "corrupt-avro", "not-avro"} <= set(reasons)


@pytest.mark.parametrize("kind,rec", [("transaction", TX), ("transaction_label", LABEL)])
def test_random_corruptions_agree_with_the_reference(kind, rec):
    raw = serde(kind).encode(rec)
    rng = random.Random(20261126)
    records = []
    for _ in range(400):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(2 if rng.random() < 0.1 else 10, len(b))  # mostly the body, sometimes the header
            b[i] = rng.randrange(256)
        records.append(bytes(b))
    assert_agree(kind, records)
