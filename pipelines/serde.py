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
from fastavro.read import SchemaResolutionError
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


def java_type(schema: Any, named: dict[str, Any] | None = None, defined: set[str] | None = None) -> str:
    """A parsed (fastavro, unhinted) schema in the JVM decoders' notation (udfs/java AvroDecoder.Type.parse):
    space-separated tokens in prefix order. ``null`` ... ``string``; ``long@timestamp-millis``;
    ``bytes@decimal:P:S``; ``record NAME N`` then per field ``name DEFAULT TYPE``, where DEFAULT is ``-`` or the
    hex of the default value's Avro binary encoding under the field's type (the JVM decodes it once, as Avro Java
    does); ``enum NAME N sym... DEFAULT`` (a symbol or ``-``); ``fixed NAME SIZE LOGICAL`` (``-`` or
    ``decimal:P:S``); ``array T``; ``map T``; ``union N T...``; ``ref NAME`` for a named type defined earlier."""
    named = {} if named is None else named
    defined = set() if defined is None else defined

    def logical(s: dict) -> str:
        lt = s.get("logicalType")
        if lt == "decimal":
            return f"decimal:{int(s['precision'])}:{int(s.get('scale', 0))}"
        return lt if lt == "timestamp-millis" and s["type"] == "long" else ""

    def go(s: Any) -> str:
        if isinstance(s, str):
            if s in named or s in defined:
                return f"ref {s}"
            return s
        if isinstance(s, list):
            return " ".join([f"union {len(s)}", *map(go, s)])
        t = s["type"]
        if isinstance(t, (dict, list)) or t in named:
            return go(t)
        if t == "record":
            defined.add(s["name"])
            parts = [f"record {s['name']} {len(s['fields'])}"]
            for f in s["fields"]:
                default = "-"
                if "default" in f:
                    buf = io.BytesIO()
                    wrapper = {"type": "record", "name": "_default", "fields": [{"name": "v", "type": _as_refs(f["type"])}]}
                    fastavro.schemaless_writer(buf, parse_schema(wrapper, named_schemas=dict(named)),
                                               {"v": f["default"]})
                    default = buf.getvalue().hex() or "="  # "=": an empty encoding (a null default)
                parts.append(f"{f['name']} {default} {go(f['type'])}")
            return " ".join(parts)
        if t == "enum":
            defined.add(s["name"])
            return " ".join([f"enum {s['name']} {len(s['symbols'])}", *s["symbols"], s.get("default", "-")])
        if t == "fixed":
            defined.add(s["name"])
            return f"fixed {s['name']} {int(s['size'])} {logical(s) or '-'}"
        if t in ("array", "map"):
            return f"{t} {go(s['items' if t == 'array' else 'values'])}"
        lt = logical(s)
        return f"{t}@{lt}" if lt else t

    return go(schema)


def _without_logical_types(t: Any) -> Any:
    """A parsed schema without its logicalType annotations (the underlying types only)."""
    if isinstance(t, list):
        return [_without_logical_types(b) for b in t]
    if not isinstance(t, dict):
        return t
    out = {k: v for k, v in t.items() if k != "logicalType"}
    for k in ("items", "values"):
        if k in out:
            out[k] = _without_logical_types(out[k])
    if "fields" in out:
        out["fields"] = [{**f, "type": _without_logical_types(f["type"])} for f in out["fields"]]
    if not isinstance(out["type"], str):
        out["type"] = _without_logical_types(out["type"])
    return out


def _as_refs(t: Any) -> Any:
    """A parsed type with each named type's definition replaced by its name (to parse it with named_schemas)."""
    if isinstance(t, list):
        return [_as_refs(b) for b in t]
    if isinstance(t, dict):
        if t["type"] in ("record", "enum", "fixed"):
            return t["name"]
        if t["type"] == "array":
            return {**t, "items": _as_refs(t["items"])}
        if t["type"] == "map":
            return {**t, "values": _as_refs(t["values"])}
    return t


def _named(schema: dict) -> dict[str, Any]:
    named: dict[str, Any] = {}
    parse_schema(schema, named_schemas=named, _write_hint=False)
    return named


def java_schema_index() -> str:
    """Every shipped writer schema (schemas/ and schemas/history/) as a line for the JVM decoders
    (udfs/java AvroDecoder): the fingerprint as hex of its bytes on the wire, the record's full name and the whole
    schema in :func:`java_type`'s notation; then one ``reader:STEM`` line per schema in schemas/ (the readers the
    JVM resolves every writer of the same record name to). The UDF jar build writes it next to the classes, so the
    JVM reads the same .avsc files through the same fingerprints."""
    lines = ["# fingerprint | reader:stem\tfull name\tschema (generated from schemas/**/*.avsc by pipelines/serde.py)"]
    for fp, parsed in sorted(_known_writers().items()):
        lines.append(f"{fp.hex()}\t{parsed['name']}\t{java_type(parsed, _named(parsed))}")
    for path in sorted(SCHEMA_DIR.glob("*.avsc")):
        parsed = parse_schema(load_schema_file(path), _write_hint=False)
        lines.append(f"reader:{path.stem}\t{parsed['name']}\t{java_type(parsed, _named(parsed))}")
    return "\n".join(lines) + "\n"


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
        # fastavro re-parses a schema on every call unless it carries its parse hint (3x the cost of a small
        # record); the unhinted forms above stay for fingerprints and the JVM's index.
        self._write_schema = parse_schema(load_schema_file(self.path))
        # Read with the writers' logical types left out: a logical type is the reader's interpretation (Avro Java
        # applies the reader's), and fastavro would apply a writer's (a v3 writer's timestamp-millis event_time
        # came out as a datetime under the v2 reader, which has a plain long).
        self._writers = {fp: parse_schema(_without_logical_types(w)) for fp, w in _known_writers().items()}
        self._writers[self.fingerprint] = self._write_schema

    def encode(self, record: Mapping[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self._write_schema, record)
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
            record = fastavro.schemaless_reader(buf, writer,
                                                self._write_schema if writer is not self._write_schema else None)
        except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, IndexError...
            if isinstance(exc, SchemaResolutionError) and writer.get("name") == self.schema["name"]:
                # a writer of this record whose value the reader has no place for (an enum symbol without a
                # default, a union branch); another record's writer is corrupt-avro, as it always was
                raise DecodeError(f"schema mismatch for {self.name}: {exc}", raw, "schema-mismatch",
                                  **where) from exc  # fastavro raises EOFError, ValueError, UnicodeDecodeError, IndexError...
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


# The scorer's dtype is float32: the largest finite value and the smallest normal one, as doubles.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_MIN_NORMAL = 1.1754943508222875e-38
DEFAULT_MAX_AMOUNT = 1_000_000.0  # pipelines.config FraudConfig.max_amount's default
DEFAULT_MIN_TIME_MS = 946_684_800_000  # FraudConfig.min_event_time_ms's default: 2000-01-01 (udfs/java AvroDecoder)


def check_transaction(tx: Mapping[str, Any], now_ms: int, max_future_ms: int,
                      max_amount: float = DEFAULT_MAX_AMOUNT,
                      min_time_ms: int = DEFAULT_MIN_TIME_MS) -> tuple[str, str] | None:
    """The rules a decoded transaction must keep beyond its Avro types. Returns (reason, message) or None.

    The JVM decoder (udfs/java DecodeTransaction) keeps the same rules in the same order; the tests compare them.
    An amount is finite, >= 0, a normal float32 value (the scorer's dtype: a double beyond its range would be
    infinite there, and the scorer raises on non-finite input) and at most `max_amount` (fraud.max_amount)."""
    amount = tx["amount"]
    if math.isnan(amount) or math.isinf(amount):
        return "bad-amount", f"amount is {amount}"
    if amount < 0:
        return "negative-amount", f"amount {amount} is negative"
    if amount > FLOAT32_MAX or amount != 0 and amount < FLOAT32_MIN_NORMAL:
        return "bad-amount", f"amount {amount} is not a normal float32 value (the scorer's dtype)"
    if amount > max_amount:
        return "amount-too-large", f"amount {amount} is over fraud.max_amount {max_amount}"
    if tx["event_time"] <= 0:
        return "bad-timestamp", f"event_time {tx['event_time']} is not a positive epoch-millis value"
    if tx["event_time"] < min_time_ms:
        return "bad-timestamp", f"event_time {tx['event_time']} is before fraud.min_event_time_ms {min_time_ms}"
    if tx["event_time"] > now_ms + max_future_ms:
        return "future-timestamp", (f"event_time {tx['event_time']} is more than {max_future_ms} ms "
                                    f"ahead of the reference time {now_ms}")
    if tx["customer_id"] < 0 or tx["terminal_id"] < 0:
        return "bad-id", "customer_id and terminal_id must be >= 0"
    return None


# ------------------------------------------------------------------------------------------- batch encoding
# fastavro's per-record writer costs ~30 us for a FraudScore (a 32-entry map): at tens of thousands of scores a
# second that was the largest Python cost in the fraud job (py-spy). A batch of flat records with fixed-width parts
# is assembled with numpy instead. AvroSerde.encode stays the reference; tests check the two are byte-identical.

def _varints(values) -> tuple["np.ndarray", "np.ndarray"]:
    """Avro zigzag varints of an int64 column: a (n, width) byte matrix and each value's length."""
    import numpy as np

    x = np.asarray(values, dtype=np.int64)
    v = ((x << 1) ^ (x >> 63)).view(np.uint64)
    n = len(x)
    groups = np.zeros((n, 10), np.uint8)
    lens = np.ones(n, np.int64)
    for i in range(10):
        groups[:, i] = (v & np.uint64(0x7F)).astype(np.uint8)
        v = v >> np.uint64(7)
        more = v != 0
        if not more.any():
            break
        groups[:, i] |= more.astype(np.uint8) << 7
        lens += more
    return groups[:, : int(lens.max(initial=1))], lens


def _varint_bytes(value: int) -> bytes:
    g, n = _varints([value])
    return g[0, : n[0]].tobytes()


@lru_cache(maxsize=1024)
def _avro_string(text: str) -> bytes:
    raw = text.encode()
    return _varint_bytes(len(raw)) + raw


@lru_cache(maxsize=64)
def _map_template(keys: tuple[str, ...]) -> tuple["np.ndarray", "np.ndarray"]:
    """A map<double> block with these keys (count, then key/value pairs, then 0) with zeros for the values, and
    the byte columns of the values, in key order: the same for every record and every batch."""
    import numpy as np

    head = _varint_bytes(len(keys))
    row = bytearray(head)
    value_at = []
    for k in keys:
        row += _avro_string(k)
        value_at.append(len(row))
        row += bytes(8)
    row += b"\x00"
    cols = (np.asarray(value_at, np.int64)[:, None] + np.arange(8)).ravel()
    return np.frombuffer(bytes(row), np.uint8), cols


_SCALARS = ("long", "int", "double", "string", "enum")


def _kind(t: Any) -> str:
    return t if isinstance(t, str) else ("union" if isinstance(t, list) else t["type"])


def _nullable(t: Any) -> tuple[int, Any] | None:
    """(the null branch's index, the other branch) of a union of null and one scalar type, else None."""
    if not (isinstance(t, list) and len(t) == 2 and "null" in t):
        return None
    null_at = t.index("null")
    other = t[1 - null_at]
    return (null_at, other) if _kind(other) in _SCALARS else None


def _default_bytes(ftype: Any, default: Any) -> bytes:
    """The Avro binary encoding of a field's default value under its type."""
    buf = io.BytesIO()
    wrapper = {"type": "record", "name": "_default", "fields": [{"name": "v", "type": ftype}]}
    fastavro.schemaless_writer(buf, parse_schema(wrapper), {"v": default})
    return buf.getvalue()


class BatchEncoder:
    """Encodes columns into single-object Avro records for a record schema whose fields are long, int, double,
    enum, string, map<double> (the same keys in every record) or a union of null and one of the scalar types.

    Column forms (`encode`'s `columns`, field -> value):

    * long / int / double: an array of n values; enum: an array of n symbol indices.
    * string: one str for the whole batch (the fast path: one encoding repeated), or an array of n str (per row:
      each distinct value is encoded once).
    * map<double>: (keys, (n, len(keys)) float array).
    * union of null and T: None (null in every row); an array in T's form (no nulls; for strings an object array
      whose None entries are null); or (null_mask, values): bool [n] (True: null) and values in T's form (the
      values of null rows are ignored).
    * a field left out of `columns` that has a default takes it in every row (so callers written before an
      optional field existed keep working).
    """

    def __init__(self, name: str):
        self.serde = serde(name)
        self.fields = self.serde.schema["fields"]
        self._defaults: dict[str, bytes] = {}
        for f in self.fields:
            t = f["type"]
            kind = _kind(t)
            ok = kind in _SCALARS or (kind == "map" and t["values"] == "double") or (
                kind == "union" and _nullable(t) is not None)
            if not ok:
                raise TypeError(f"BatchEncoder cannot encode field {f['name']!r} of type {t!r}")
            if "default" in f:
                self._defaults[f["name"]] = _default_bytes(t, f["default"])

    def encode(self, columns: Mapping[str, Any], n: int) -> list[bytes]:
        """`columns`: field -> values in the forms of the class docstring; n records."""
        import numpy as np

        if n == 0:
            return []
        parts: list[tuple[np.ndarray, np.ndarray]] = []  # (bytes matrix, lengths) per piece, in field order

        def const(b: bytes) -> tuple[np.ndarray, np.ndarray]:
            return np.frombuffer(b, np.uint8)[None, :].repeat(n, 0), np.full(n, len(b), np.int64)

        def scalar(kind: str, col: Any) -> tuple[np.ndarray, np.ndarray]:
            if kind in ("long", "int", "enum"):
                return _varints(col)
            if kind == "double":
                return (np.ascontiguousarray(col, dtype="<f8").view(np.uint8).reshape(n, 8),
                        np.full(n, 8, np.int64))
            if isinstance(col, str):  # one value for the batch
                return const(_avro_string(col))
            return _strings(col, n)

        parts.append(const(self.serde._header))
        for f in self.fields:
            t = f["type"]
            kind = _kind(t)
            if f["name"] not in columns and f["name"] in self._defaults:
                parts.append(const(self._defaults[f["name"]]))
                continue
            col = columns[f["name"]]
            if kind == "union":
                null_at, other = _nullable(t)
                okind = _kind(other)
                if col is None:
                    parts.append(const(_varint_bytes(null_at)))
                    continue
                if isinstance(col, tuple):
                    null, values = col
                    null = np.asarray(null, dtype=bool)
                elif okind == "string" and not isinstance(col, str):
                    values = np.asarray(col, dtype=object)
                    null = np.equal(values, None)
                else:
                    null, values = np.zeros(n, bool), col
                if okind == "string" and not isinstance(values, str) and null.any():
                    values = np.where(null, "", np.asarray(values, dtype=object))
                elif okind != "string" and null.any():
                    values = np.where(null, 0, values)
                branch = np.where(null, null_at, 1 - null_at).astype(np.int64)
                parts.append(_varints(branch))
                mat, lens = scalar(okind, values)
                parts.append((mat, np.where(null, 0, lens)))
            elif kind == "map":  # the same keys per record: one block of len(keys) entries, then 0
                keys, values = col
                if not len(keys):
                    parts.append(const(b"\x00"))
                    continue
                template, value_cols = _map_template(tuple(keys))
                block = np.repeat(template[None, :], n, 0)
                block[:, value_cols] = np.ascontiguousarray(values, dtype="<f8").view(np.uint8).reshape(n, -1)
                parts.append((block, np.full(n, block.shape[1], np.int64)))
            else:
                parts.append(scalar(kind, col))
        # Wide fixed-width pieces (the map block) are sliced out of one buffer; runs of small pieces between them
        # are scattered into a packed buffer; each record is then one join of its segments.
        segments: list[list[bytes]] = []
        run: list[tuple[np.ndarray, np.ndarray]] = []
        for mat, lens in parts + [(None, None)]:
            if mat is not None and not (mat.shape[1] > 32 and (lens == mat.shape[1]).all()):
                run.append((mat, lens))
                continue
            if run:
                segments.append(_pack(run, n))
                run = []
            if mat is not None:
                w = mat.shape[1]
                data = np.ascontiguousarray(mat).tobytes()
                segments.append([data[i * w: (i + 1) * w] for i in range(n)])
        if len(segments) == 1:
            return segments[0]
        return [b"".join(seg) for seg in zip(*segments)]


def _strings(col: Any, n: int) -> tuple["np.ndarray", "np.ndarray"]:
    """Avro strings that vary per row: each distinct value encoded once, then gathered (model versions under an
    A/B split: a few distinct values over many rows)."""
    import numpy as np

    values = np.asarray(col, dtype=object)
    if values.shape != (n,):
        raise ValueError(f"a per-row string column needs {n} values, got shape {values.shape}")
    uniq, inverse = np.unique(values, return_inverse=True)  # object dtype: a str dtype would drop trailing NULs
    encoded = [_avro_string(str(u)) for u in uniq]
    width = max(len(e) for e in encoded)
    table = np.zeros((len(encoded), width), np.uint8)
    for i, e in enumerate(encoded):
        table[i, : len(e)] = np.frombuffer(e, np.uint8)
    ulens = np.asarray([len(e) for e in encoded], np.int64)
    return table[inverse.ravel()], ulens[inverse.ravel()]


def _pack(parts, n: int) -> list[bytes]:
    """Concatenates variable-length byte pieces per record (matrices + lengths) into one bytes per record."""
    import numpy as np

    lengths = np.stack([p[1] for p in parts], axis=1)
    starts = np.cumsum(lengths, axis=1) - lengths
    total = lengths.sum(axis=1)
    rec_start = np.cumsum(total) - total
    buf = np.empty(int(total.sum()), np.uint8)
    for (mat, lens), off in zip(parts, starts.T):
        mask = np.arange(mat.shape[1])[None, :] < lens[:, None]
        pos = (rec_start + off)[:, None] + np.arange(mat.shape[1])[None, :]
        buf[pos[mask]] = mat[mask]
    data = buf.tobytes()
    return [data[s: s + ln] for s, ln in zip(rec_start.tolist(), total.tolist())]
