"""The JVM decoders (udfs/java AvroDecoder) against the Python reference (udfs/routing.py BatchDecoder).

Both get the same records, good, written by an older schema and broken in every way we know, plus seeded random
corruptions, at the same reference time; every verdict and every field of a good record must agree."""

import io
import math
import os
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import fastavro
import pytest

from pipelines.config import FraudConfig
from pipelines.serde import (FLOAT32_MAX, FLOAT32_MIN_NORMAL, MARKER, SCHEMA_DIR, _fingerprint, _varint_bytes,
                             load_schema_file, serde)
from tests.flink_util import udf_classpath
from udfs.routing import KINDS, BatchDecoder

pytestmark = pytest.mark.skipif(shutil.which("java") is None or shutil.which("javac") is None,
                                reason="needs a JDK (the jobs need one too)")

NOW = 1_795_000_000_000
MAX_FUTURE = 86_400_000
MAX_AMOUNT = FraudConfig().max_amount
TX = {"transaction_id": 7, "customer_id": 2, "terminal_id": 3, "amount": 12.5, "event_time": 1_522_540_831_000,
      "produced_at": 1_700_000_000_000, "currency": "EUR"}
LABEL = {"transaction_id": 7, "customer_id": 2, "terminal_id": 3, "label": 1, "tx_time": 1_522_540_831_000,
         "label_time": 1_523_145_631_000, "produced_at": 1_700_000_000_000}


OVERLONG = "varint longer than 64 bits"
# An Avro int is at most 32 bits (5 bytes): Avro Java refuses a sixth byte and the JVM decoder bits beyond 32;
# fastavro reads an int like a long, and the kind's rules then judge the number (a label of 2**40: bad-label).
OVERLONG_INT = "int varint longer than 32 bits"
NEGATIVE_UNION = re.compile(r"union index -\d+ out of range")
# Avro Java (the oracle, tests/unit/test_avro_oracle.py) checks the index of an enum it skips; fastavro does not
SKIPPED_ENUM = re.compile(r"enum index -?\d+ out of range")
V3 = SCHEMA_DIR / "history" / "transaction.v3.avsc"


def java_decode(kind: str, records: list[bytes | None], max_amount: float = MAX_AMOUNT) -> list[list[str]]:
    text = "".join(("-" if r is None else r.hex()) + "\n" for r in records)
    cmd = ["java", "-cp", udf_classpath(), "io.streamscore.udfs.AvroDecoder", kind, str(NOW), str(MAX_FUTURE),
           repr(float(max_amount))]
    out = subprocess.run(cmd, input=text, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines()]


def assert_agree(kind: str, records: list[bytes | None], max_amount: float = MAX_AMOUNT) -> list[str]:
    import pandas as pd

    ref = BatchDecoder(kind, MAX_FUTURE, max_amount)(pd.Series(records, dtype=object), now_ms=NOW)
    got = java_decode(kind, records, max_amount)
    assert len(got) == len(records)
    fields = KINDS[kind].fields
    for i, (row, raw) in enumerate(zip(got, records)):
        want = ref.iloc[i]
        if row[1].endswith((OVERLONG, OVERLONG_INT)) and want["reason"] != "corrupt-avro":
            continue  # fastavro reads an overlong varint as some number; the spec (and Java's Avro) refuse it
        if NEGATIVE_UNION.search(row[1]) and want["reason"] != "corrupt-avro":
            continue  # fastavro indexes a union's branches like a Python list: -1 is the last; Avro Java refuses
        if SKIPPED_ENUM.search(row[1]) and want["reason"] != "corrupt-avro":
            continue
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
        tx.encode({**TX, "amount": -0.01}), tx.encode({**TX, "event_time": 0}), tx.encode({**TX, "event_time": 946_684_799_999}),
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
              lb.encode({**LABEL, "label_time": 0}), lb.encode({**LABEL, "label_time": 946_684_799_999}),
              lb.encode({**LABEL, "label_time": NOW + MAX_FUTURE + 1}),
              serde("transaction").encode(TX), good[0] + b"\x01"]
    truncated = [good[3][:n] for n in range(len(good[3]))]
    reasons = assert_agree("transaction_label", good + broken + truncated)
    assert reasons[:20] == [""] * 20
    assert {"bad-label", "bad-timestamp", "corrupt-avro", "not-avro"} <= set(reasons)


def v3(i: int = 0, **fields) -> bytes:
    """A transaction written by the newer v3 writer (a nullable merchant category, a channel enum)."""
    return _encode(V3, {**TX, "transaction_id": i, "merchant_category": [None, "5411", "€", ""][i % 4],
                        "channel": ["UNKNOWN", "POS", "ONLINE", "ATM"][i % 4], **fields})


def test_a_newer_v3_writer_agrees_with_the_reference():
    good = [v3(i, amount=1.5 * i, customer_id=i) for i in range(40)]
    broken = [v3(1, amount=-1.0), v3(2, event_time=0), v3(3, currency="\x00"), good[5] + b"\x00"]
    # merchant_category's union index (the last 2 bytes are it and the channel) out of range: corrupt in both; the
    # v2 reader skips the channel, and an enum index out of range there is corrupt in Java (as in Avro Java), while
    # fastavro skips it without looking (SKIPPED_ENUM)
    bad_union = good[0][:-2] + b"\x04\x00"
    bad_enum = good[0][:-1] + b"\x0a"
    truncated = [good[1][:n] for n in range(len(good[1]))]
    reasons = assert_agree("transaction", good + broken + [bad_union, bad_enum] + truncated)
    assert reasons[:40] == [""] * 40
    assert reasons[40:46] == ["negative-amount", "bad-timestamp", "", "corrupt-avro", "corrupt-avro",
                              "corrupt-avro"]


@pytest.mark.parametrize("kind,rec", [("transaction", TX), ("transaction_label", LABEL), ("v3", None)])
def test_random_corruptions_agree_with_the_reference(kind, rec):
    raw = v3(5) if kind == "v3" else serde(kind).encode(rec)
    kind = "transaction" if kind == "v3" else kind
    rng = random.Random(20261126)
    records = []
    for _ in range(400):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(2 if rng.random() < 0.1 else 10, len(b))  # mostly the body, sometimes the header
            b[i] = rng.randrange(256)
        records.append(bytes(b))
    assert_agree(kind, records)



# ------------------------------------------------------------------------------------------- poison records
# A valid single-object Transaction header and fields whose `currency` length is a 10-byte varint near
# Long.MAX_VALUE: AvroDecoder.need() once added the length to the position, overflowed and let it through, and
# ByteBuffer.wrap threw IndexOutOfBoundsException out of the SQL function (65 job restarts in 70 s, nothing scored).

def tx_with_currency_length(length: int, tail: bytes = b"EURXXXX") -> bytes:
    """A Transaction (the current writer) whose currency string claims `length` bytes and has `tail`."""
    body = b"".join(_varint_bytes(TX[f]) for f in ("transaction_id", "customer_id", "terminal_id"))
    body += struct.pack("<d", TX["amount"])
    body += _varint_bytes(TX["event_time"]) + _varint_bytes(TX["produced_at"])
    return MARKER + serde("transaction").fingerprint + body + _varint_bytes(length) + tail


def test_the_crafted_50_byte_record_is_a_dead_letter():
    raw = tx_with_currency_length(2**63 - 8)
    assert len(raw) == 50 and len(_varint_bytes(2**63 - 8)) == 10
    assert raw.startswith(MARKER + serde("transaction").fingerprint)
    [row] = java_decode("transaction", [raw])
    assert row[0] == "corrupt-avro", row
    assert "EOF" in row[1] and "IndexOutOfBounds" not in row[1], row
    assert row[2:] == ["0", "0", "0", "0.0", "0", "0", "0"]
    assert assert_agree("transaction", [raw]) == ["corrupt-avro"]


def test_lengths_that_overflow_are_negative_or_run_past_the_end_agree():
    tail = b"EURXXXX"
    lengths = [2**63 - 1, 2**63 - 2, 2**63 - 8, 2**62, 2**62 + 7, 2**32 + 3, 2**32 + 7, 2**31, 2**31 - 1,
               2**31 - 7, 2**31 + 7, 8, len(tail) + 1, 1 << 40, -1, -2, -7, -(2**31), -(2**63), -(2**63) + 1]
    records = [tx_with_currency_length(n, tail) for n in lengths]
    good = [tx_with_currency_length(len(tail), tail), tx_with_currency_length(0, b"")]
    short = [tx_with_currency_length(3, tail)]  # 4 bytes left over
    reasons = assert_agree("transaction", records + good + short)
    assert reasons == ["corrupt-avro"] * len(records) + ["", ""] + ["corrupt-avro"]
    rows = java_decode("transaction", records)
    assert not [r for r in rows if "internal-error" in r[0] or "Exception" in r[1]]


def test_truncated_and_overlong_varints_agree():
    raw = serde("transaction").encode({**TX, "transaction_id": 2**63 - 1, "customer_id": 2**62,
                                       "event_time": TX["event_time"], "produced_at": -(2**63)})
    truncated = [raw[:n] for n in range(len(raw))]
    ten_ff = MARKER + serde("transaction").fingerprint + b"\xff" * 10 + b"\x01"  # 11-byte varint
    eof_in_varint = MARKER + serde("transaction").fingerprint + b"\xff" * 9
    reasons = assert_agree("transaction", [raw] + truncated + [ten_ff, eof_in_varint])
    assert reasons[0] == "" and set(reasons[1:]) == {"corrupt-avro", "not-avro"}


@pytest.mark.parametrize("max_amount", [MAX_AMOUNT, FLOAT32_MAX])
def test_amount_rules_agree(max_amount):
    tx = serde("transaction")
    below_normal = math.nextafter(FLOAT32_MIN_NORMAL, 0.0)
    above_float32 = math.nextafter(FLOAT32_MAX, math.inf)
    cases = {
        0.0: "", -0.0: "", 0.01: "", FLOAT32_MIN_NORMAL: "", MAX_AMOUNT: "",
        float("nan"): "bad-amount", float("inf"): "bad-amount", float("-inf"): "bad-amount",
        -0.01: "negative-amount", -1e300: "negative-amount", -5e-324: "negative-amount",
        5e-324: "bad-amount", 1e-40: "bad-amount", 1e-300: "bad-amount", below_normal: "bad-amount",  # subnormal
        3.5e38: "bad-amount", 1.7976931348623157e308: "bad-amount", above_float32: "bad-amount",  # inf as float32
        math.nextafter(MAX_AMOUNT, math.inf): "amount-too-large" if max_amount == MAX_AMOUNT else "",
        1e12: "amount-too-large" if max_amount == MAX_AMOUNT else "",
        FLOAT32_MAX: "amount-too-large" if max_amount == MAX_AMOUNT else "",
    }
    amounts = list(cases)
    reasons = assert_agree("transaction", [tx.encode({**TX, "amount": a}) for a in amounts], max_amount)
    assert dict(zip(amounts, reasons)) == cases or reasons == list(cases.values())
    # every good amount is a finite float32 (the scorer's dtype): no inf, and no flush to zero of a non-zero one
    import numpy as np

    for a, r in zip(amounts, reasons):
        if r == "":
            f = np.float32(a)
            assert np.isfinite(f) and (f != 0 or a == 0), a


def test_random_lengths_agree():
    rng = random.Random(20260101)
    tails = [b"", b"E", b"EUR", b"EURXXXX", bytes(range(40, 90))]
    records = []
    for _ in range(300):
        n = rng.choice([rng.randrange(-(2**63), 2**63), rng.randrange(-64, 64), rng.randrange(2**31 - 64, 2**31 + 64),
                        rng.randrange(2**32 - 64, 2**32 + 64), 2**63 - 1 - rng.randrange(64)])
        records.append(tx_with_currency_length(n, rng.choice(tails)))
    rows = java_decode("transaction", records)
    assert not [r for r in rows if r[0] == "internal-error"]
    assert_agree("transaction", records)


@pytest.mark.parametrize("text", ["ascii", "€uro", "日本", "😀", "\x00nul", "é" * 30])
def test_utf8_strings_agree(text):
    assert assert_agree("transaction", [serde("transaction").encode({**TX, "currency": text})]) == [""]


def test_invalid_utf8_agrees():
    bad = [b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xc2", b"\xc2\x7f", b"\xe0\x80\x80", b"\xe0\x9f\xbf",
           b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xef\xbf", b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf",
           b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff", b"\xfe", b"E\xe2\x82", b"\xf0\x9f\x98"]
    good = [b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80", b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbf",
            b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf", b"\xf3\xbf\xbf\xbf"]
    rng = random.Random(7)
    fuzz = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6))) for _ in range(2000)]
    records = [tx_with_currency_length(len(t), t) for t in bad + good + fuzz]
    reasons = assert_agree("transaction", records)
    assert reasons[:len(bad)] == ["corrupt-avro"] * len(bad)
    assert reasons[len(bad):len(bad) + len(good)] == [""] * len(good)


THROWING = """
package io.streamscore.udfs;

public class ThrowingDecoders {
    static final class Throws extends DecodeTransaction {
        final Throwable t;

        Throws(Throwable t) {
            this.t = t;
        }

        @Override
        String[] check(Object[] v, long nowMs, long maxFutureMs, double maxAmount) {
            if (t instanceof RuntimeException) {
                throw (RuntimeException) t;
            }
            throw (Error) t;
        }
    }

    public static void main(String[] args) throws Exception {
        byte[] raw = new byte[args[0].length() / 2];
        for (int i = 0; i < raw.length; i++) {
            raw[i] = (byte) Integer.parseInt(args[0].substring(2 * i, 2 * i + 2), 16);
        }
        Throwable[] ts = {new IllegalStateException("a bug of ours"), new ArrayIndexOutOfBoundsException(3),
            new StackOverflowError(), new OutOfMemoryError("Java heap space"), new NullPointerException()};
        for (Throwable t : ts) {
            Throws d = new Throws(t);
            d.load();
            print(d.eval(raw, 86400000L, 1e6, null).toString());
        }
        DecodeTransaction unopened = new DecodeTransaction(); // open() never ran: no writer plans
        print(unopened.eval(raw, 86400000L, 1e6, null).toString());
        DecodeTransaction d = new DecodeTransaction();
        d.load();
        print(d.eval(raw, null, null, null).toString()); // null limits: the defaults
        print(d.eval(null, 86400000L, 1e6, null).toString());
        DecodeLabel l = new DecodeLabel();
        l.load();
        print(l.eval(raw, 86400000L, null).toString());
    }

    static void print(String s) {
        System.out.println(s.replace('\\n', ' '));
    }
}
"""


def test_nothing_throws_out_of_the_sql_function(tmp_path):
    src = tmp_path / "io" / "streamscore" / "udfs" / "ThrowingDecoders.java"
    src.parent.mkdir(parents=True)
    src.write_text(THROWING)
    cp = udf_classpath()
    subprocess.run(["javac", "--release", "11", "-nowarn", "-cp", cp, "-d", str(tmp_path / "out"), str(src)],
                   check=True, timeout=120)
    raw = serde("transaction").encode(TX)
    out = subprocess.run(["java", "-cp", os.pathsep.join([str(tmp_path / "out"), cp]),
                          "io.streamscore.udfs.ThrowingDecoders", raw.hex()],
                         capture_output=True, text=True, check=True, timeout=120).stdout.splitlines()
    assert len(out) == 9, out
    for line, cls in zip(out[:5], ["IllegalStateException: a bug of ours", "ArrayIndexOutOfBoundsException",
                                   "StackOverflowError", "OutOfMemoryError: Java heap space",
                                   "NullPointerException"]):
        assert line.startswith("+I[internal-error, ") and cls in line and line.endswith(", 0, 0, 0, 0.0, 0, 0, 0]")
    assert out[5].startswith("+I[internal-error, ") and "NullPointerException" in out[5]
    assert out[6].startswith("+I[null, null, 7, 2, 3, 12.5, 1522540831000, 1700000000000, "), out[6]
    assert out[7].startswith("+I[null-value, "), out[7]
    assert out[8].startswith("+I[corrupt-avro, "), out[8]  # a transaction is not a label


def test_the_reference_decoder_never_raises():
    import dataclasses

    import pandas as pd

    dec = BatchDecoder("transaction", MAX_FUTURE, MAX_AMOUNT)

    def boom(*args):
        raise RuntimeError("a bug of ours")

    dec.kind = dataclasses.replace(dec.kind, check=boom)
    out = dec(pd.Series([serde("transaction").encode(TX), None], dtype=object), now_ms=NOW)
    assert list(out["reason"]) == ["internal-error", "null-value"]
    assert "RuntimeError: a bug of ours" in out["error"][0]
