"""Avro serde for every topic, with schemas loaded from ``schemas/*.avsc`` by path.

Records travel in Avro *single-object encoding* (the Avro spec's ``C3 01`` marker, then the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema, then the binary record). The fingerprint tells a reader which writer
schema produced the bytes, so a reader on a newer schema resolves an older writer's records (schema evolution)
without a schema registry. Every known writer schema lives in ``schemas/`` or ``schemas/history/``.

Decode failures raise :class:`DecodeError`, which keeps the raw bytes and a short machine-readable reason, the way
confluent-kafka's ``ValueDeserializationError`` keeps ``kafka_message``.
"""

from __future__ import annotations

import io
import json
import math
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
MARKER = b"\xc3\x01"
HEADER_LEN = 10


class DecodeError(ValueError):
    """A record could not be decoded or broke a rule of its schema.

    ``raw`` is the undecoded value, ``reason`` a short code for counters and the dead-letter topic, and ``topic``,
    ``partition``, ``offset`` say where it came from when known.
    """

    def __init__(self, message: str, raw: bytes | None, reason: str, *, topic: str | None = None,
                 partition: int | None = None, offset: int | None = None):
        super().__init__(message)
        self.raw = raw
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset


def load_schema_file(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


@lru_cache(maxsize=None)
def _known_writers() -> dict[bytes, dict]:
    """Fingerprint -> parsed schema for every .avsc shipped (current and history)."""
    out: dict[bytes, dict] = {}
    for path in sorted(SCHEMA_DIR.rglob("*.avsc")):
        parsed = parse_schema(load_schema_file(path), _write_hint=False)
        out[_fingerprint(parsed)] = parsed
    return out


def _fingerprint(parsed: dict) -> bytes:
    # fastavro returns the CRC-64-AVRO fingerprint as hex of the big-endian value; the spec puts it little-endian.
    value = int(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"), 16)
    return struct.pack("<Q", value)


class AvroSerde:
    """Encodes and decodes one record type. ``name`` is the .avsc file's stem (``transaction``)."""

    def __init__(self, name: str, *, schema_path: str | Path | None = None):
        self.name = name
        self.path = Path(schema_path) if schema_path else SCHEMA_DIR / f"{name}.avsc"
        if not self.path.exists():
            raise FileNotFoundError(f"no Avro schema at {self.path}")
        self.schema = parse_schema(load_schema_file(self.path), _write_hint=False)
        self.fingerprint = _fingerprint(self.schema)
        self._header = MARKER + self.fingerprint
        self._writers = dict(_known_writers())
        self._writers[self.fingerprint] = self.schema

    def encode(self, record: Mapping[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, raw: bytes | bytearray | memoryview | None, *, topic: str | None = None,
               partition: int | None = None, offset: int | None = None) -> dict[str, Any]:
        where = dict(topic=topic, partition=partition, offset=offset)
        if raw is None:
            raise DecodeError("empty record (null value)", raw, "null-value", **where)
        raw = bytes(raw)
        if len(raw) < HEADER_LEN or raw[:2] != MARKER:
            raise DecodeError(f"not an Avro single-object record ({len(raw)} bytes, starts {raw[:4]!r})",
                              raw, "not-avro", **where)
        writer = self._writers.get(raw[2:HEADER_LEN])
        if writer is None:
            raise DecodeError(f"unknown writer schema fingerprint {raw[2:HEADER_LEN].hex()}",
                              raw, "unknown-schema", **where)
        buf = io.BytesIO(raw)
        buf.seek(HEADER_LEN)
        try:
            record = fastavro.schemaless_reader(buf, writer, self.schema if writer is not self.schema else None)
        except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, IndexError...
            raise DecodeError(f"corrupt Avro body for {self.name}: {type(exc).__name__}: {exc}",
                              raw, "corrupt-avro", **where) from exc
        if buf.tell() != len(raw):
            raise DecodeError(f"{len(raw) - buf.tell()} trailing bytes after a {self.name} record",
                              raw, "corrupt-avro", **where)
        return record


@lru_cache(maxsize=None)
def serde(name: str) -> AvroSerde:
    """The shared serde for a schema name; cached because parsing schemas is not free."""
    return AvroSerde(name)


def check_transaction(tx: Mapping[str, Any], now_ms: int, max_future_ms: int) -> tuple[str, str] | None:
    """The rules a decoded transaction must keep beyond its Avro types. Returns (reason, message) or None."""
    amount = tx["amount"]
    if math.isnan(amount) or math.isinf(amount):
        return "bad-amount", f"amount is {amount}"
    if amount < 0:
        return "negative-amount", f"amount {amount} is negative"
    if tx["event_time"] <= 0:
        return "bad-timestamp", f"event_time {tx['event_time']} is not a positive epoch-millis value"
    if tx["event_time"] > now_ms + max_future_ms:
        return "future-timestamp", (f"event_time {tx['event_time']} is more than {max_future_ms} ms "
                                    f"ahead of the reference time {now_ms}")
    if tx["customer_id"] < 0 or tx["terminal_id"] < 0:
        return "bad-id", "customer_id and terminal_id must be >= 0"
    return None
